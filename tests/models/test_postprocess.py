"""postprocess (visionmtl/models/postprocess.py): the model's eval outputs are postprocess of its
raw outputs; settings are plain data."""

from __future__ import annotations

import json

import pytest
import torch

from visionmtl.config import load_config
from visionmtl.models import build_model
from visionmtl.models.postprocess import PostprocessSettings, mask_features, postprocess
from visionmtl.structures import ClassSpec

TINY = [
    "model.fpn_channels=32",
    "model.sem.channels=16",
    "model.det.num_convs=1",
    "model.tasks=[det,sem,inst]",
    "model.inst.channels=16",
    "model.inst.num_convs=1",
    "model.inst.roi_size=7",
]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    return build_model(cfg.model, ClassSpec.numbered(3), cfg.eval).eval()


def test_eval_forward_is_postprocess_of_raw_outputs(model: torch.nn.Module) -> None:
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    sizes, outputs = [(60, 96), (64, 80)], [(120, 192), (64, 80)]
    with torch.no_grad():
        expected = model(images, image_sizes=sizes, output_sizes=outputs)
        raw = model.raw_outputs(images)
    settings = PostprocessSettings.from_model(model)
    actual = postprocess(raw, sizes, outputs, settings, model.mask_logits)
    for want, got in zip(expected, actual, strict=True):
        assert want.keys() == got.keys() == {"boxes", "scores", "labels", "masks", "sem_seg"}
        for key in want:
            assert torch.equal(want[key], got[key]), key
    assert all(
        value.dtype.is_floating_point or value.dtype == torch.int64 for value in raw.values()
    )
    assert [f.shape[-1] for f in mask_features(raw)] == [12, 6, 3]  # strides 8, 16, 32


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
