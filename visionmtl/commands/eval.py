"""Evaluate a checkpoint: visionmtl eval CHECKPOINT [--ann JSON --images DIR]
[--sem-images DIR --sem-masks DIR] [--out FILE.json]
[--save-json DIR [--conf-thresh 0.25]].

--ann/--images score box AP, mask AP and mIoU on a COCO set; --sem-images/--sem-masks score mIoU,
per-class IoU and pixel accuracy on a folder of images and PNG class maps (same file stem) whose
ids are read with the checkpoint's own declaration (its data.val_sem_*, else its first PNG
training source, else the semantic head's ids: 0 background, k = the head's class k). Both may be
given for a multi-task model. Without either: the checkpoint's validation sets.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from visionmtl.cli import run_tool

if TYPE_CHECKING:
    from visionmtl.config import Config


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("checkpoint", help="best.pt / last.pt written by visionmtl train")
    parser.add_argument("--ann", help="COCO instances JSON (default: the config's data.val_ann)")
    parser.add_argument(
        "--images", help="image folder for --ann (default: the config's data.val_images)"
    )
    parser.add_argument(
        "--out",
        help="write the metrics JSON here (default: eval.json beside the checkpoint, or "
        "eval2.json, ... when it exists: the training's own eval.json is kept)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument(
        "--amp",
        choices=["off", "bf16", "fp16"],
        help="inference precision on CUDA (default: the checkpoint's eval.amp, normally off = fp32)",
    )
    parser.add_argument("--sem-images", help="image folder of a semantic PNG set")
    parser.add_argument("--sem-masks", help="its PNG class maps (same file stems)")
    parser.add_argument(
        "--save-json",
        metavar="DIR",
        help="also write files other tools read into DIR (created if needed): bbox_results.json "
        "and segm_results.json (COCO results format: pycocotools' COCO.loadRes, "
        "faster-coco-eval, FiftyOne; COCOeval of them against --ann gives the printed AP), "
        "ground_truth.json when the data policy dropped or fixed annotations of --ann (AP is "
        "scored on that cleaned ground truth), and confusion.json (detection and semantic "
        "confusion matrices, ground truth in rows) with confusion.png (the same drawn, where "
        "matplotlib is installed). Earlier results are never overwritten: "
        "if DIR holds any of these files the tool stops before evaluating (exit code 2); "
        "pass a new DIR per evaluation",
    )
    parser.add_argument(
        "--conf-thresh",
        type=float,
        default=0.25,
        help="score threshold of the detections in the confusion matrix (default 0.25, as "
        "Ultralytics); the COCO results keep every detection, as AP needs",
    )
    args = parser.parse_args(argv)
    if bool(args.ann) != bool(args.images):
        parser.error("--ann and --images go together")
    if bool(args.sem_images) != bool(args.sem_masks):
        parser.error("--sem-images and --sem-masks go together")
    if not 0.0 <= args.conf_thresh <= 1.0:
        parser.error(f"--conf-thresh must be in [0, 1], got {args.conf_thresh}")

    def run() -> None:
        import torch

        from visionmtl.config import ConfigError
        from visionmtl.engine.checkpoint import load_model
        from visionmtl.evaluation.evaluate import combined_metrics
        from visionmtl.evaluation.export import check_fresh, write_results
        from visionmtl.evaluation.report import format_metrics_table
        from visionmtl.evaluation.validation import (
            ValidationSets,
            build_validation_sets,
            coco_val_set,
            png_eval_set,
            run_png_ids,
        )

        if args.save_json:  # before the model loads: refuse at once, not after the evaluation
            check_fresh(args.save_json)
        model, cfg = load_model(args.checkpoint, device=args.device)
        if args.amp:
            cfg = replace(cfg, eval=replace(cfg.eval, amp=args.amp))
        if args.ann or args.sem_masks:
            coco = coco_val_set(cfg, args.ann, args.images) if args.ann else None
            sem_png = None
            if args.sem_masks:
                if "sem" not in cfg.model.tasks:
                    raise ConfigError(
                        f"--sem-masks: {args.checkpoint} has no semantic head "
                        f"(model.tasks {cfg.model.tasks})"
                    )
                ids = run_png_ids(cfg)
                sem_png = png_eval_set(cfg, model.classes, args.sem_images, args.sem_masks, **ids)
            sets = ValidationSets(coco, sem_png)
        else:
            _check_config_paths(cfg)
            sets = build_validation_sets(cfg, model.classes)
        evaluations = sets.run(model, cfg, torch.device(args.device))
        metrics = combined_metrics(evaluations)
        print(format_metrics_table(metrics))
        out = Path(args.out) if args.out else _free_name(Path(args.checkpoint).parent)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {out}")
        if args.save_json:
            for path in write_results(args.save_json, evaluations, args.conf_thresh):
                empty = path.name.endswith("_results.json") and path.stat().st_size <= 2
                # pycocotools' loadRes fails on an empty list (it reads the first result).
                note = " (no detections: an empty list, which COCO.loadRes cannot read)"
                print(f"wrote {path}{note if empty else ''}")

    return run_tool(run)


def _free_name(run_dir: Path) -> Path:
    """``run_dir/eval.json``, or ``eval2.json``, ... when it exists: the training's own
    ``eval.json`` (and earlier evaluations) are kept."""
    from visionmtl.api.writer import free_path

    return free_path(run_dir, "eval", ".json", set())


def _check_config_paths(cfg: Config) -> None:
    """FileNotFoundError unless the checkpoint's config names validation sets that exist."""
    data = cfg.data
    if not data.val_ann and not data.val_sem_masks:
        raise FileNotFoundError(
            "no evaluation set: pass --ann JSON --images DIR and/or --sem-images DIR "
            "--sem-masks DIR"
        )
    for path in (data.val_ann, data.val_sem_masks):
        if path and not Path(path).exists():
            raise FileNotFoundError(
                f"{path} (a validation set named in the checkpoint's config, relative to the "
                "current directory) does not exist: pass --ann/--images or "
                "--sem-images/--sem-masks"
            )


if __name__ == "__main__":
    sys.exit(main())
