"""Evaluate a checkpoint: python tools/eval.py CHECKPOINT [--ann JSON --images DIR] [--out FILE.json]."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", help="best.pt / last.pt written by tools/train.py")
    parser.add_argument("--ann", help="COCO instances JSON (default: the config's data.val_ann)")
    parser.add_argument(
        "--images", help="image folder for --ann (default: the config's data.val_images)"
    )
    parser.add_argument(
        "--out", help="write the metrics JSON here (default: eval.json beside the checkpoint)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument(
        "--amp",
        choices=["off", "bf16", "fp16"],
        help="inference precision on CUDA (default: the checkpoint's eval.amp, normally off = fp32)",
    )
    args = parser.parse_args(argv)
    if bool(args.ann) != bool(args.images):
        parser.error("--ann and --images go together")

    def run() -> None:
        import torch

        from visionmtl.engine.checkpoint import load_model
        from visionmtl.evaluation.report import format_metrics_table
        from visionmtl.evaluation.validation import (
            ValidationSets,
            coco_val_set,
            semantic_png_val_set,
        )

        model, cfg = load_model(args.checkpoint, device=args.device)
        if args.amp:
            cfg = replace(cfg, eval=replace(cfg.eval, amp=args.amp))
        ann, images = args.ann or cfg.data.val_ann, args.images or cfg.data.val_images
        if not ann:
            raise FileNotFoundError("no evaluation set: pass --ann JSON --images DIR")
        if not args.ann and not Path(ann).is_file():
            raise FileNotFoundError(
                f"{ann} (the validation set named in the checkpoint's config, relative to the "
                "current directory) does not exist: pass --ann JSON --images DIR"
            )
        dataset = coco_val_set(cfg, ann, images)
        # The config's semantic PNG validation set (data.val_sem_*) scores mIoU unless --ann is given.
        sem_png = None if args.ann else semantic_png_val_set(cfg, model.classes)
        sets = ValidationSets(dataset, sem_png)
        metrics = sets.evaluate(model, cfg, torch.device(args.device))
        print(format_metrics_table(metrics))
        out = Path(args.out) if args.out else Path(args.checkpoint).with_name("eval.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {out}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
