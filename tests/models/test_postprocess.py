"""postprocess (visionmtl/models/postprocess.py): hand-computed predictions from hand-made raw
outputs; settings are plain data, checked when read."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from benchmarks.cli import TINY_MODEL
from visionmtl.config import load_config
from visionmtl.models import build_model
from visionmtl.models.postprocess import (
    PostprocessSettings,
    mask_feature_name,
    mask_features,
    postprocess,
)
from visionmtl.structures import ClassSpec

TINY = list(TINY_MODEL)  # the tests' tiny det+sem+inst model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    return build_model(cfg.model, ClassSpec.numbered(3), cfg.eval).eval()


def hand_made_raw() -> dict[str, torch.Tensor]:
    """Raw outputs of one 64 x 48 image, 2 classes: three FCOS points, a 3-class 8 x 6 semantic
    map, one pyramid map for the mask head."""
    sem_logits = torch.zeros(1, 3, 8, 6)
    sem_logits[0, 2, :, :4] = 5.0  # class 2 left of x = 32, class 1 right of it
    sem_logits[0, 1, :, 4:] = 5.0
    return {
        "points": torch.tensor([[8.0, 8.0], [9.0, 8.0], [40.0, 40.0]]),
        "point_strides": torch.tensor([8, 8, 16]),
        "box_ltrb": torch.tensor([[[4.0, 4, 4, 4], [4, 4, 4, 4], [8, 8, 8, 8]]]),
        "cls_logits": torch.tensor([[[-10.0, 10], [-10, 0], [2, -10]]]),
        "ctr_logits": torch.tensor([[10.0, 10, 0]]),
        "sem_logits": sem_logits,
        mask_feature_name(0): torch.zeros(1, 4, 8, 6),
    }


HAND_SETTINGS = PostprocessSettings(
    tasks=("det", "sem", "inst"),
    num_classes=2,
    score_thresh=0.05,
    nms_thresh=0.6,
    max_detections=100,
    pre_nms_topk=1000,
    sem_stride=8,
    sem_first_class=0,
    class_agnostic=False,
    mask_threshold=0.5,
)


def test_postprocess_gives_hand_computed_predictions() -> None:
    """Point 1's box [5, 4, 13, 12] overlaps point 0's [4, 4, 12, 12] (IoU 0.78 > 0.6) with a
    lower score: NMS drops it. Boxes and masks at twice the input size; the mask head sees the
    boxes in input pixels."""
    rois_seen = []

    def mask_logits(features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        rois_seen.append(rois)
        return torch.full((rois.shape[0], 2, 7, 7), 10.0)  # every box filled

    (result,) = postprocess(hand_made_raw(), [(64, 48)], [(128, 96)], HAND_SETTINGS, mask_logits)
    sigmoid = torch.sigmoid
    expected_scores = [sigmoid(torch.tensor(10.0)), (sigmoid(torch.tensor(2.0)) * 0.5).sqrt()]
    torch.testing.assert_close(result["scores"], torch.stack(expected_scores))
    assert result["labels"].tolist() == [1, 0]
    assert result["boxes"].tolist() == [[8, 8, 24, 24], [64, 64, 96, 96]]
    assert rois_seen[0].tolist() == [[0, 4, 4, 12, 12], [0, 32, 32, 48, 48]]
    masks = result["masks"]
    assert masks.shape == (2, 128, 96) and masks.dtype == torch.bool
    for mask, (x0, y0, x1, y1) in zip(masks, [(8, 8, 24, 24), (64, 64, 96, 96)], strict=True):
        inside = mask[y0:y1, x0:x1]  # filled but for the soft corners of the resized grid
        assert mask.sum() == inside.sum() and inside.float().mean() > 0.95
        assert mask[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].all()
    expected_sem = torch.ones(128, 96, dtype=torch.int64)
    expected_sem[:, :64] = 2
    assert torch.equal(result["sem_seg"], expected_sem)


def test_postprocess_applies_the_detection_settings() -> None:
    raw = hand_made_raw()
    loose = replace(HAND_SETTINGS, tasks=("det",), nms_thresh=0.9)
    assert len(postprocess(raw, [(64, 48)], None, loose)[0]["boxes"]) == 3
    one = replace(HAND_SETTINGS, tasks=("det",), max_detections=1)
    assert postprocess(raw, [(64, 48)], None, one)[0]["boxes"].tolist() == [[4, 4, 12, 12]]
    strict = replace(HAND_SETTINGS, tasks=("det",), score_thresh=0.9)
    assert postprocess(raw, [(64, 48)], None, strict)[0]["labels"].tolist() == [1]


def test_raw_outputs_are_tensors_by_name(model: torch.nn.Module) -> None:
    with torch.no_grad():
        raw = model.raw_outputs(torch.randn(2, 3, 64, 96))
    assert all(
        value.dtype.is_floating_point or value.dtype == torch.int64 for value in raw.values()
    )
    assert [f.shape[-1] for f in mask_features(raw)] == [12, 6, 3]  # strides 8, 16, 32
    assert [name for name in raw if name.startswith("mask_features")] == [
        mask_feature_name(level) for level in range(3)
    ]


def test_settings_are_plain_data(model: torch.nn.Module) -> None:
    settings = PostprocessSettings.from_model(model)
    assert settings.tasks == ("det", "sem", "inst") and settings.num_classes == 3
    again = PostprocessSettings.from_dict(json.loads(json.dumps(settings.to_dict())))
    assert again == settings


def test_masks_need_the_mask_head(model: torch.nn.Module) -> None:
    with torch.no_grad():
        raw = model.raw_outputs(torch.zeros(1, 3, 64, 64))
    settings = PostprocessSettings.from_model(model)
    with pytest.raises(ValueError, match="mask_logits_fn"):
        postprocess(raw, [(64, 64)], None, settings)


def test_settings_from_dict_name_the_bad_key(model: torch.nn.Module) -> None:
    data = PostprocessSettings.from_model(model).to_dict()
    with pytest.raises(ValueError, match="unknown key.*'nms'"):
        PostprocessSettings.from_dict({**data, "nms": 0.5})
    with pytest.raises(ValueError, match="missing key.*'max_detections'"):
        PostprocessSettings.from_dict({k: v for k, v in data.items() if k != "max_detections"})
    with pytest.raises(ValueError, match='"nms_thresh" is .0.5., expected float'):
        PostprocessSettings.from_dict({**data, "nms_thresh": "0.5"})
    with pytest.raises(ValueError, match='"max_detections" is None'):  # det needs it
        PostprocessSettings.from_dict({**data, "max_detections": None})


def test_settings_of_a_model_without_det() -> None:
    cfg = load_config(None, [*TINY, "model.tasks=[sem]"])
    sem_only = build_model(cfg.model, ClassSpec.numbered(3), cfg.eval).eval()
    settings = PostprocessSettings.from_model(sem_only)
    assert settings.tasks == ("sem",) and settings.sem_stride == 8
    assert settings.nms_thresh is None and settings.mask_threshold is None
    assert PostprocessSettings.from_dict(settings.to_dict()) == settings
