"""The benchmark's peer (torchvision Mask R-CNN): weights mapping, the recipe reaching the model,
tiny train + eval, mIoU painting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.maskrcnn_peer import (
    MOBILENET_V2_STAGES,
    build_peer_maskrcnn,
    evaluate_peer,
    instances_to_semantic,
    timm_to_torchvision_mobilenet_v2,
    train_peer,
)
from benchmarks.peer_recipe import PeerRecipe
from tests.conftest import SHARED_WEIGHTS
from visionmtl.data import CocoDataset
from visionmtl.models import BackboneError

WEIGHTS = SHARED_WEIGHTS
TINY = PeerRecipe(epochs=1, min_size=64, max_size=64)  # 64 px shapes images stay 64 px


@pytest.fixture(scope="module")
def weights_file() -> Path:
    if not WEIGHTS.is_file():
        pytest.skip("../shared/weights is not available (fresh clone)")
    return WEIGHTS.resolve()


def test_peer_backbone_tensors_all_come_from_the_file(weights_file: Path) -> None:
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    mapped = timm_to_torchvision_mobilenet_v2(state)
    model = build_peer_maskrcnn(num_classes=1, weights=weights_file, recipe=TINY)
    body = model.backbone.body.state_dict()
    file_tensors = [k for k in state if not k.startswith("classifier")]
    file_tensors = [k for k in file_tensors if not k.endswith("num_batches_tracked")]
    assert len(body) == len(file_tensors) == 260
    for name, tensor in body.items():
        assert torch.equal(tensor, mapped[f"features.{name}"]), name
    assert model.roi_heads.box_predictor.cls_score.out_features == 2  # person + background


def test_mapped_weights_give_timm_logits(weights_file: Path) -> None:
    timm = pytest.importorskip("timm")
    import torchvision

    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    reference = timm.create_model("mobilenetv2_100").eval()
    reference.load_state_dict(state)
    mapped = torchvision.models.mobilenet_v2().eval()
    mapped.load_state_dict(timm_to_torchvision_mobilenet_v2(state), strict=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(mapped(images), reference(images), atol=1e-5)


def test_bad_weights_file_is_a_backbone_error(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="not found"):
        build_peer_maskrcnn(1, tmp_path / "missing.pth", TINY)
    bad = tmp_path / "bad.pth"
    torch.save({"conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(BackboneError, match="missing"):
        build_peer_maskrcnn(1, bad, TINY)


def _trainable_features(model: torch.nn.Module) -> list[int]:
    """Indices of the MobileNetV2 ``features`` blocks with trainable parameters."""
    body = model.backbone.body
    return [
        int(name)
        for name, block in body.named_children()
        if any(p.requires_grad for p in block.parameters())
    ]


def test_recipe_sizes_and_trainable_stages_reach_the_model(weights_file: Path) -> None:
    recipe = PeerRecipe()
    pretrained = build_peer_maskrcnn(1, weights_file, recipe)
    assert tuple(pretrained.transform.min_size) == (480,)
    assert pretrained.transform.max_size == 800
    body = pretrained.backbone.body
    # torchvision's stage starts: the stem, the strided blocks, the last block
    starts = [0, *(int(n) for n, b in body.named_children() if getattr(b, "_is_cn", False)), 18]
    assert len(starts) == MOBILENET_V2_STAGES
    # 3 trainable stages from the top: blocks from the 4th stage start on, frozen BatchNorm
    assert _trainable_features(pretrained) == list(range(starts[-3], 19))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    # without ImageNet weights, as torchvision's builders: every stage trains, plain BatchNorm
    scratch = build_peer_maskrcnn(1, None, recipe)
    assert _trainable_features(scratch) == list(range(19))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in scratch.backbone.body.modules())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny convolutions are dominated by thread synchronisation on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_train_and_evaluate_peer(shapes_paths: dict[str, Path], one_thread: None) -> None:
    torch.manual_seed(0)
    train_set = CocoDataset(shapes_paths["train_ann"], shapes_paths["train_images"])
    val_set = CocoDataset(shapes_paths["val_ann"], shapes_paths["val_images"])
    model = build_peer_maskrcnn(len(train_set.category_ids), None, TINY)
    # fewer proposals, sampled RoIs and detections: the mask head dominates CPU time
    model.rpn._pre_nms_top_n = {"training": 200, "testing": 100}
    model.rpn._post_nms_top_n = {"training": 50, "testing": 20}
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 32
    model.roi_heads.detections_per_img = 10
    before = model.roi_heads.mask_predictor.mask_fcn_logits.weight.clone()
    seconds = train_peer(model, train_set, TINY, device="cpu", max_iters=2)
    assert seconds > 0
    assert not torch.equal(before, model.roi_heads.mask_predictor.mask_fcn_logits.weight)
    metrics = evaluate_peer(model, val_set, "cpu")
    for key in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "mIoU", "infer_ms"):
        assert key in metrics, key
    assert metrics["infer_ms"] > 0 and 0.0 <= metrics["mIoU"] <= 1.0


def test_instances_to_semantic_higher_score_wins() -> None:
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # label 0, score 0.6
    masks[1, 1:3, 1:3] = True  # label 2, score 0.9: overlaps instance 0 at (1, 1)
    masks[2, 3, :] = True  # label 1, score 0.3: below the threshold, not painted
    labels = torch.tensor([0, 2, 1])
    scores = torch.tensor([0.6, 0.9, 0.3])
    expected = torch.tensor(
        [
            [1, 1, 0, 0],
            [1, 3, 3, 0],
            [0, 3, 3, 0],
            [0, 0, 0, 0],
        ]
    )
    assert torch.equal(instances_to_semantic(masks, labels, scores), expected)
    # the same instances in another order give the same map
    order = torch.tensor([1, 2, 0])
    assert torch.equal(instances_to_semantic(masks[order], labels[order], scores[order]), expected)
