"""The semantic peer benchmark (smp FPN): a smoke run of both models and the peer's weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import STREET, VOID

smp = pytest.importorskip("segmentation_models_pytorch")


def _config(street: dict, tmp_path: Path) -> Path:
    """A semantic-only config on the tiny CamVid-like PNG sets (native ids, void ignored)."""
    ids = dict(enumerate(STREET))
    train, val = street["train"], street["val"]
    source = {**train, "tasks": ["sem"], "ids": ids, "ignore_ids": [VOID]}
    config = {
        "model": {
            "backbone": {"name": "resnet10t", "out_strides": [8, 16, 32]},
            "tasks": ["sem"],
            "fpn_channels": 16,
            "sem": {"channels": 8, "class_names": STREET},
        },
        "data": {
            "extra_sources": [source],
            "val_sem_images": val["images"],
            "val_sem_masks": val["sem_masks"],
            "val_sem_ids": ids,
            "val_sem_ignore_ids": [VOID],
            "image_size": 64,
            "batch_size": 4,
            "num_workers": 0,
        },
        "train": {"epochs": 1, "warmup_iters": 1},
    }
    path = tmp_path / "sem.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_smoke_run_scores_both_models_on_the_same_classes(street: dict, tmp_path: Path) -> None:
    from benchmarks.semantic_benchmark import main

    out = tmp_path / "bench"
    argv = ["--config", str(_config(street, tmp_path)), "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "benchmark.json").read_text())["results"]
    assert len(results) == 2
    for row in results.values():
        assert set(row["per_class"]) == set(STREET)  # no background class, void not a class
        assert 0 <= row["mIoU"] <= 1 and row["train_s"] > 0 and row["infer_ms"] > 0
    assert "| sky" in (out / "benchmark.md").read_text()


def test_peer_encoder_loads_a_timm_file_and_rejects_another(tmp_path: Path) -> None:
    import timm

    from benchmarks.smp_peer import build_smp_fpn
    from visionmtl.models import BackboneError

    source = timm.create_model("mobilenetv2_100", pretrained=False)
    path = tmp_path / "mnv2.pth"
    torch.save(source.state_dict(), path)
    model = build_smp_fpn(3, path)
    stem = model.encoder.model.conv_stem.weight
    assert torch.equal(stem, source.conv_stem.weight)
    torch.save({"conv_stem.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(BackboneError, match="bad.pth: does not fit"):
        build_smp_fpn(3, tmp_path / "bad.pth")


def test_peer_classes_are_named_in_the_heads_order(street: dict) -> None:
    """The head's class order (model.sem.class_names) differs from the PNG ids' order: a peer
    that always predicts its first channel is scored under the head's first class."""
    from benchmarks.smp_peer import evaluate_smp
    from visionmtl.config import load_config
    from visionmtl.data.sources import png_dataset
    from visionmtl.evaluation.validation import eval_transform

    class FirstChannel(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(images.shape[0], 3, *images.shape[-2:])
            logits[:, 0] = 1.0
            return logits

    head = ["shape", "ground", "sky"]  # PNG ids are 0 sky, 1 ground, 2 shape
    val = street["val"]
    val_set = png_dataset(
        val["images"], val["sem_masks"], head, "t", ids=dict(enumerate(STREET)), ignore_ids=[VOID]
    )
    cfg = load_config(None, ["data.image_size=64", "model.backbone.name=resnet10t"])
    metrics = evaluate_smp(FirstChannel(), val_set, head, eval_transform(cfg), torch.device("cpu"))
    assert metrics["per_class"]["shape"]["IoU"] > 0
    assert metrics["per_class"]["sky"]["IoU"] == 0 and metrics["per_class"]["ground"]["IoU"] == 0
