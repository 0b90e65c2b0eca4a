"""Run the demo: synthetic shapes -> train -> evaluate -> overlay picture, timed (``make demo``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--config", default="configs/shapes_demo.yaml")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    args = parser.parse_args(argv)

    def run() -> None:
        from PIL import Image

        from visionmtl.api import Predictor, image_grid, load_rgb
        from visionmtl.config import load_config
        from visionmtl.data import generate_shapes
        from visionmtl.engine.trainer import train

        start = time.perf_counter()
        cfg = load_config(args.config, args.set)
        paths = generate_shapes(Path(cfg.data.train_ann).parents[1])  # <dir>/annotations/train.json
        generated = time.perf_counter()
        output_dir = Path(cfg.train.output_dir)
        # The demo's own folder, replaced at each run (`make clean` removes it).
        metrics = train(cfg, output_dir, exist_ok=True)
        trained = time.perf_counter()
        predictor = Predictor.from_checkpoint(output_dir / "best.pt", score_thresh=0.5)
        images = sorted(Path(paths["val_images"]).iterdir())[:8]
        pictures = [r.plot(load_rgb(p)) for p, r in zip(images, predictor(images), strict=True)]
        Image.fromarray(image_grid(pictures)).save(output_dir / "predictions.png")
        timing = {
            "data_seconds": round(generated - start, 1),
            "train_and_eval_seconds": round(trained - generated, 1),
            "total_seconds": round(time.perf_counter() - start, 1),
        }
        (output_dir / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
        print(
            f"demo: box AP50 {metrics.get('bbox_AP50', 0):.3f}, box AP {metrics.get('bbox_AP', 0):.3f}, "
            f"mIoU {metrics.get('mIoU', 0):.3f}; {timing['total_seconds']:.0f} s in all; "
            f"outputs in {output_dir}/ (best.pt, eval.json, predictions.png)"
        )

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
