"""Benchmark our semantic-only model against segmentation_models_pytorch's FPN on a PNG label set.

python benchmarks/semantic_benchmark.py --config configs/camvid.yaml [--set KEY=VALUE ...]
    [--epochs N] [--threads T] [--seed S] [--out runs/camvid_benchmark] [--skip-peer] [--skip-ours]

One process, the same thread count, the same PNG training source and validation set (the
config's first PNG source and ``data.val_sem_*``, their declared ids), the same ImageNet
MobileNetV2 file, training transform, image size and epochs for both models; each with its own
optimiser and loss (ours: its config; the peer: smp's CamVid example, :class:`SmpRecipe`). Both
are scored by the same evaluator at the original size. Needs ``pip install
segmentation-models-pytorch``. Writes ``benchmark.json`` and ``benchmark.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a script, too

from benchmarks.cli import add_peer_arguments, peer_run_config
from visionmtl.cli import run_tool
from visionmtl.evaluation.report import render_table

OURS = "visionmtl"
PEER = "smp FPN (tu-mobilenetv2_100)"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("mIoU", "mIoU"),
    ("pixel acc", "pixel_acc"),
    ("params M", "params_m"),
    ("train s", "train_s"),
    ("infer ms/img", "infer_ms"),
)
NOTES: tuple[str, ...] = (
    "Both models read the same PNG files through visionmtl's training transform (same image "
    "size, rescaling, flips and colour jitter) for the same epochs and batch size, from the same "
    "ImageNet MobileNetV2 file; each keeps its own optimiser and loss (the peer: smp's CamVid "
    "example, Adam 2e-4 + Dice loss, cosine to 1e-5). Void pixels are ignored by both losses.",
    "mIoU: mean over the classes of the PNG id map (no background class), at the original "
    "resolution, by the same evaluator (visionmtl.evaluation.SemSegEvaluator).",
    "train s: wall time of training (visionmtl's single validation after the last epoch timed "
    "again and subtracted). infer ms/img: median at batch 1 from the decoded RGB array to the "
    "class map at the original size.",
)


def _format(value: Any, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if key in ("train_s", "infer_ms", "params_m") else f"{value:.4f}"


def format_tables(rows: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    """The summary table and the per-class IoU table."""
    summary = render_table(
        ["model", *(title for title, _ in COLUMNS)],
        [[name, *(_format(row.get(key), key) for _, key in COLUMNS)] for name, row in rows.items()],
        markdown=markdown,
    )
    classes = list(next(iter(rows.values()))["per_class"]) if rows else []
    per_class = render_table(
        ["class", *rows],
        [
            [name, *(_format(row["per_class"][name]["IoU"], "IoU") for row in rows.values())]
            for name in classes
        ],
        markdown=markdown,
    )
    return f"{summary}\n\n{per_class}"


def _params_m(model: Any) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def run_ours(cfg: Any, out_dir: Path, device: Any) -> dict[str, Any]:
    """Train + evaluate our model into ``out_dir``; time training and inference."""
    from benchmarks.latency import median_latency_ms
    from visionmtl.api import Predictor
    from visionmtl.engine.checkpoint import load_model
    from visionmtl.engine.trainer import train
    from visionmtl.evaluation.evaluate import evaluate_model
    from visionmtl.evaluation.validation import semantic_png_val_set

    start = time.perf_counter()
    train(cfg, out_dir, exist_ok=True)  # the benchmark reads out_dir/best.pt
    train_wall = time.perf_counter() - start
    model, saved_cfg = load_model(out_dir / "best.pt", device=device)
    val_set = semantic_png_val_set(saved_cfg, model.classes)
    start = time.perf_counter()
    metrics = evaluate_model(model, val_set, saved_cfg, device, tasks=["sem"])
    eval_seconds = time.perf_counter() - start
    predictor = Predictor(model, saved_cfg, device=device, batch_size=1)
    return {
        **metrics,
        "params_m": _params_m(model),
        "train_s": max(train_wall - eval_seconds, 0.0),
        "infer_ms": median_latency_ms(predictor, val_set),
    }


def run_peer(cfg: Any, out_dir: Path, device: Any, recipe: Any) -> dict[str, Any]:
    """Train + evaluate smp's FPN on the config's PNG training source and validation set."""
    import torch

    from benchmarks.smp_peer import build_smp_fpn, evaluate_smp, train_smp
    from visionmtl.evaluation.validation import (
        eval_transform,
        png_eval_set,
        run_png_ids,
        train_transform,
    )
    from visionmtl.structures import ClassSpec

    data = cfg.data
    source = next(s for s in data.extra_sources if s.sem_masks)
    classes = ClassSpec.from_data([], [], cfg.model.sem.class_names, sem_background=False)
    ids = {"class_names": source.class_names, "ids": source.ids, "ignore_ids": source.ignore_ids}
    # the augmentation ours trains with
    train_tf = train_transform(cfg)
    train_set = png_eval_set(
        cfg, classes, source.images, source.sem_masks, **ids, transform=train_tf
    )
    val_set = png_eval_set(
        cfg, classes, data.val_sem_images, data.val_sem_masks, **run_png_ids(cfg)
    )
    torch.manual_seed(cfg.train.seed)
    model = build_smp_fpn(len(classes.sem_names), cfg.model.backbone.weights)
    seconds = train_smp(model, train_set, recipe, device, data.num_workers, cfg.train.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "model.pt")
    metrics = evaluate_smp(model, val_set, list(classes.sem_names), eval_transform(cfg), device)
    (out_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {**metrics, "params_m": _params_m(model), "train_s": seconds}


def write_report(out: Path, settings: dict[str, Any], rows: dict[str, dict[str, Any]]) -> Path:
    """``benchmark.json`` and ``benchmark.md`` into ``out``; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"settings": settings, "results": rows, "notes": list(NOTES)}
    (out / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Semantic benchmark", "", json.dumps(settings), "", format_tables(rows, True), ""]
    md_path = out / "benchmark.md"
    md_path.write_text("\n".join([*lines, *(f"- {note}" for note in NOTES)]) + "\n")
    return md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_peer_arguments(parser, "configs/camvid.yaml", "runs/semantic_benchmark")
    parser.add_argument("--seed", type=int, help="train.seed of both models")
    args = parser.parse_args(argv)

    def run() -> None:
        import torch

        from benchmarks.smp_peer import SmpRecipe
        from visionmtl.engine.trainer import resolve_device

        seed = [] if args.seed is None else [f"train.seed={args.seed}"]
        cfg, overrides = peer_run_config(args, seed)
        out, device = Path(args.out), resolve_device(cfg.train.device)
        recipe = SmpRecipe(batch_size=cfg.data.batch_size, epochs=cfg.train.epochs)
        settings: dict[str, Any] = {
            "config": str(args.config),
            "overrides": overrides,
            "image_size": cfg.data.image_size,
            "epochs": cfg.train.epochs,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "visionmtl": {"optimizer": cfg.train.optimizer, "lr": cfg.train.lr},
            "peer": recipe.describe(),
        }
        rows: dict[str, dict[str, Any]] = {}
        if not args.skip_ours:
            rows[OURS] = run_ours(cfg, out / "ours", device)
        if not args.skip_peer:
            rows[PEER] = run_peer(cfg, out / "peer", device, recipe)
        md_path = write_report(out, settings, rows)
        print(format_tables(rows))
        print(f"wrote {md_path} and {out / 'benchmark.json'}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
