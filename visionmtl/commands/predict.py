"""Predict on images and save overlays: visionmtl predict CHECKPOINT IMAGE [IMAGE ...] --out-dir DIR."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out-dir", required=True, help="where overlays and predictions.json go")
    parser.add_argument("--score-thresh", type=float, default=0.3)
    parser.add_argument("--grid", help="also save all overlays tiled into this PNG")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images (0 = all)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    def run() -> None:
        from PIL import Image

        from visionmtl.api import Predictor, image_grid, load_rgb

        paths: list[Path] = []
        for item in map(Path, args.images):
            paths.extend(
                sorted(p for p in item.iterdir() if p.is_file()) if item.is_dir() else [item]
            )
        paths = paths[: args.limit] if args.limit else paths
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=args.device, score_thresh=args.score_thresh
        )
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pictures, records = [], {}
        for path, result in zip(paths, predictor(paths), strict=True):
            picture = result.plot(load_rgb(path))
            Image.fromarray(picture).save(out_dir / f"{path.stem}_pred.png")
            pictures.append(picture)
            records[str(path)] = result.to_dict()
        (out_dir / "predictions.json").write_text(json.dumps(records, indent=1) + "\n")
        if args.grid:
            Image.fromarray(image_grid(pictures)).save(args.grid)
        print(f"wrote {len(paths)} overlays to {out_dir}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
