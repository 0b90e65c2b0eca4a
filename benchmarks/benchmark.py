"""Benchmark our model against torchvision's Mask R-CNN (MobileNetV2-FPN) on the same data.

python benchmarks/benchmark.py --config configs/pennfudan.yaml [--set KEY=VALUE ...] [--epochs N]
    [--peer-epochs N] [--threads T] [--out runs/benchmark] [--skip-peer] [--skip-ours]

One process, the same train/val JSON, ImageNet weights, validation set, COCO evaluator and thread
count for both models. Each is trained with its own recipe: ours as its config says, the peer with
torchvision's reference recipe (:class:`benchmarks.peer_recipe.PeerRecipe`: SGD lr 0.0025 at
batch 2, warm-up + cosine, 12 epochs, resize min 480 / max 800, horizontal flips), and each is
evaluated at its own test-time size. Writes ``benchmark.json`` and ``benchmark.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a script, too

from benchmarks.cli import add_peer_arguments, peer_run_config
from visionmtl.cli import run_tool

if TYPE_CHECKING:  # torch and timm are imported when a run starts: --help stays instant
    from benchmarks.peer_recipe import PeerRecipe
from visionmtl.evaluation.report import render_table

OURS = "visionmtl"
PEER = "torchvision Mask R-CNN"
# (column title, metrics key)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("box AP", "bbox_AP"),
    ("box AP50", "bbox_AP50"),
    ("mask AP", "segm_AP"),
    ("mask AP50", "segm_AP50"),
    ("mIoU", "mIoU"),
    ("train s", "train_s"),
    ("infer ms/img", "infer_ms"),
)
NOTES: tuple[str, ...] = (
    "Each model is trained with its own recipe: visionmtl as its config says (settings: "
    "visionmtl), the peer with torchvision's references/detection recipe scaled to its batch "
    "(settings: peer). Both start from the same ImageNet MobileNetV2 file (imagenet_weights) and "
    "are evaluated on the same validation images with the same COCO evaluator, at the original "
    "image size.",
    "train s: wall time of the training loop (data loading and, for visionmtl, per-epoch "
    "checkpoint writing included). visionmtl is evaluated once, after the last epoch; that "
    "evaluation is timed again separately and subtracted. The peer's evaluation is not included.",
    "infer ms/img: median over the validation images of one image at batch 1, from the decoded "
    "RGB array to predictions at the original size (resize, normalisation and post-processing "
    "included; file decoding excluded). visionmtl through Predictor at data.image_size, the peer "
    "through its forward at its own test size (short side min_size, long side at most max_size).",
    "Peer mIoU: its instance masks (prob >= 0.5) with score >= 0.5 painted by increasing score; "
    "mask AP is '-' for a model without instance masks.",
)


def _format_value(value: Any, key: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if key in ("train_s", "infer_ms"):
        return f"{value:.1f}"
    return f"{value:.4f}"


def format_table(rows: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    """One row per model, the columns of :data:`COLUMNS`; missing or None values print as '-'."""
    header = ["model", *(title for title, _ in COLUMNS)]
    body = [
        [name, *(_format_value(values.get(key), key) for _, key in COLUMNS)]
        for name, values in rows.items()
    ]
    return render_table(header, body, markdown=markdown)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The table's metric columns (None where the model has no such output)."""
    return {key: metrics.get(key) for _, key in COLUMNS if key not in ("train_s", "infer_ms")}


def run_ours(cfg: Any, out_dir: Path, device: Any) -> dict[str, Any]:
    """Train + evaluate our model into ``out_dir``; time training and inference."""
    from benchmarks.latency import median_latency_ms
    from visionmtl.api import Predictor
    from visionmtl.engine.checkpoint import load_model
    from visionmtl.engine.trainer import train
    from visionmtl.evaluation.evaluate import evaluate_model
    from visionmtl.evaluation.validation import coco_val_set

    start = time.perf_counter()
    metrics = train(cfg, out_dir, exist_ok=True)  # the benchmark reads out_dir/best.pt
    train_wall = time.perf_counter() - start
    model, saved_cfg = load_model(out_dir / "best.pt", device=device)
    # The run's own validation set: its input statistics, data policy and cleaned ground truth.
    val_set = coco_val_set(saved_cfg, cfg.data.val_ann, cfg.data.val_images)
    start = time.perf_counter()
    evaluate_model(model, val_set, saved_cfg, device)
    eval_seconds = time.perf_counter() - start
    infer_ms = median_latency_ms(Predictor(model, saved_cfg, device=device, batch_size=1), val_set)
    return {
        **_summary(metrics),
        "train_s": max(train_wall - eval_seconds, 0.0),
        "infer_ms": infer_ms,
        "train_wall_s": train_wall,
        "eval_s": eval_seconds,
    }


def run_peer(
    cfg: Any,
    out_dir: Path,
    device: Any,
    weights: str | None,
    recipe: PeerRecipe,
    max_iters: int | None = None,
) -> dict[str, Any]:
    """Train + evaluate the torchvision Mask R-CNN with its own ``recipe`` on our data files
    (``max_iters``: stop training early, for smoke runs)."""
    import torch

    from benchmarks.maskrcnn_peer import build_peer_maskrcnn, evaluate_peer, train_peer
    from visionmtl.data import CocoDataset
    from visionmtl.evaluation.coco_eval import ground_truth_changes

    # The same data policy as ours: both train and are scored on the same cleaned annotations.
    policy = {
        "on_invalid": cfg.data.on_invalid,
        "max_bad_fraction": cfg.data.max_bad_image_fraction,
    }
    train_set = CocoDataset(cfg.data.train_ann, cfg.data.train_images, **policy)
    val_set = CocoDataset(cfg.data.val_ann, cfg.data.val_images, **policy)
    torch.manual_seed(cfg.train.seed)  # the heads' initialisation
    model = build_peer_maskrcnn(len(train_set.category_ids), weights, recipe)
    seconds = train_peer(
        model,
        train_set,
        recipe,
        device=device,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
        max_iters=max_iters,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "model.pt")
    metrics = evaluate_peer(model, val_set, device)
    metrics.update(ground_truth_changes(val_set))  # as ours reports: scored on the cleaned set
    (out_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {**_summary(metrics), "train_s": seconds, "infer_ms": metrics["infer_ms"]}


def peer_weights(cfg: Any, override: str | None) -> str | None:
    """The ImageNet file for the peer: ``--peer-weights`` or our mobilenetv2_100 file."""
    from visionmtl.config import ConfigError

    if override:
        return override
    backbone = cfg.model.backbone
    if backbone.weights and backbone.name == "mobilenetv2_100":
        return backbone.weights
    if backbone.weights or backbone.pretrained:
        raise ConfigError(
            f"model.backbone is {backbone.name!r} with ImageNet weights, but the peer needs a "
            "timm mobilenetv2_100 file: pass --peer-weights PATH"
        )
    return None  # neither model is pretrained


def write_report(
    out: Path, settings: dict[str, Any], rows: dict[str, dict[str, Any]]
) -> tuple[Path, Path]:
    """``benchmark.json`` (settings, results, notes) and ``benchmark.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"settings": settings, "results": rows, "notes": list(NOTES)}
    json_path, md_path = out / "benchmark.json", out / "benchmark.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    shared = {k: v for k, v in settings.items() if k not in ("overrides", "visionmtl", "peer")}
    lines = ["# Benchmark", "", ", ".join(f"{k}: {v}" for k, v in shared.items()), ""]
    for key, title in (("visionmtl", OURS), ("peer", f"{PEER} (its reference recipe)")):
        if key in settings:
            values = ", ".join(f"{k} {v}" for k, v in settings[key].items())
            lines.append(f"- {title}: {values}")
    lines += ["", format_table(rows, markdown=True), "", *(f"- {note}" for note in NOTES)]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_peer_arguments(parser, "configs/pennfudan.yaml", "runs/benchmark")
    parser.add_argument(
        "--peer-epochs",
        type=_positive_int,
        help="the peer's epochs (default: its recipe's, 12); e.g. 1 for a smoke run",
    )
    parser.add_argument("--peer-weights", help="timm mobilenetv2_100 file for the peer")
    args = parser.parse_args(argv)

    def run() -> None:
        import torch

        from benchmarks.peer_recipe import PeerRecipe
        from visionmtl.engine.trainer import resolve_device

        cfg, overrides = peer_run_config(args)
        out = Path(args.out)
        device = resolve_device(cfg.train.device)
        weights = peer_weights(cfg, args.peer_weights)
        recipe = PeerRecipe() if args.peer_epochs is None else PeerRecipe(epochs=args.peer_epochs)
        settings: dict[str, Any] = {
            "config": str(args.config),
            "overrides": overrides,
            "train_ann": cfg.data.train_ann,
            "val_ann": cfg.data.val_ann,
            "imagenet_weights": weights,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "torch": torch.__version__,
        }
        rows: dict[str, dict[str, Any]] = {}
        if not args.skip_ours:
            settings["visionmtl"] = {
                "image_size": cfg.data.image_size,
                "epochs": cfg.train.epochs,
                "batch_size": cfg.data.batch_size,
                "optimizer": cfg.train.optimizer,
                "lr": cfg.train.lr,
            }
            rows[OURS] = run_ours(cfg, out / "ours", device)
        if not args.skip_peer:
            settings["peer"] = recipe.to_dict()
            print(f"peer recipe: {recipe.describe()}", flush=True)
            rows[PEER] = run_peer(cfg, out / "peer", device, weights, recipe)
        json_path, md_path = write_report(out, settings, rows)
        print(format_table(rows))
        if not args.skip_peer:
            print(f"peer recipe: {recipe.describe()}")
        print(f"wrote {json_path} and {md_path}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
