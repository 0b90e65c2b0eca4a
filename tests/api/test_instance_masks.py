"""InstanceMasks (masks kept as crops of their boxes), the crop paste and the crop-wise drawing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from torchvision.utils import draw_segmentation_masks

from visionmtl.api.instance_masks import InstanceMasks
from visionmtl.api.visualize import _paint_instances
from visionmtl.models.paste import paste_mask_crops, paste_masks


def _dense() -> np.ndarray:
    masks = np.zeros((3, 20, 30), bool)
    masks[0, 2:9, 4:12] = True
    masks[1, 5:20, 10:30] = True  # touches the bottom-right corner
    masks[1, 7, 12] = False
    return masks  # mask 2 is empty


def test_round_trip_subsets_areas_and_rle() -> None:
    dense = _dense()
    masks = InstanceMasks.from_dense(dense)
    assert masks.shape == (3, 20, 30) and masks.dtype == bool and len(masks) == 3
    assert np.array_equal(np.asarray(masks), dense)
    assert np.array_equal(masks[1], dense[1]) and not masks[2].any()
    assert sum(c.size for c in masks.crops) == 7 * 8 + 15 * 20  # crops, not full images
    assert np.array_equal(masks.areas(), dense.sum(axis=(1, 2)))
    subset = masks[np.array([False, True, True])]
    assert isinstance(subset, InstanceMasks) and np.array_equal(np.asarray(subset), dense[1:])
    assert np.array_equal(np.asarray(masks[::2]), dense[::2])
    assert masks[1, 5, 10] and not masks[1, 7, 12] and np.array_equal(masks[0, 2:9], dense[0, 2:9])
    with pytest.raises(TypeError, match="np.asarray"):
        masks[:, 3]
    with pytest.raises(TypeError, match="np.asarray"):
        masks == masks  # noqa: B015, PLR0124
    assert np.array_equal(np.asarray(pickle.loads(pickle.dumps(masks))), dense)
    for rle, want in zip(masks.to_rle(), dense, strict=True):
        rle = {**rle, "counts": rle["counts"].encode()}
        assert np.array_equal(mask_util.decode(rle).astype(bool), want)


def test_a_crop_that_does_not_fit_its_region_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        InstanceMasks([np.ones((3, 3), bool)], np.array([[0, 0, 4, 3]]), (10, 10))
    with pytest.raises(ValueError, match="does not fit"):
        InstanceMasks([np.ones((3, 3), bool)], np.array([[8, 0, 11, 3]]), (10, 10))
    with pytest.raises(ValueError, match="2 crops but 1 regions"):
        InstanceMasks([np.ones((1, 1), bool)] * 2, np.array([[0, 0, 1, 1]]), (10, 10))


def test_crop_paste_equals_the_dense_paste() -> None:
    torch.manual_seed(0)
    probs = torch.rand(4, 14, 14)
    boxes = torch.tensor(
        [[3.2, 4.7, 20.5, 17.1], [0.0, 0.0, 40.0, 30.0], [35.5, 25.5, 60.0, 45.0], [5, 5, 5, 9]]
    )
    dense = paste_masks(probs, boxes, (30, 40), 0.5)
    crops, regions = paste_mask_crops(probs, boxes, (30, 40), 0.5)
    masks = InstanceMasks([c.numpy() for c in crops], regions.numpy(), (30, 40))
    assert np.array_equal(np.asarray(masks), dense.numpy())
    assert dense.any()  # the comparison covers pasted pixels
    assert crops[2].shape == (6, 6)  # a pixel of margin, clipped at the border: [24:30, 34:40]


def test_crop_wise_drawing_blends_as_torchvision() -> None:
    """Each mask blended with its colour as draw_segmentation_masks does, pixels outside every mask
    untouched; where masks overlap the later one is drawn (torchvision blackens overlaps)."""
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 256, (3, 20, 30), dtype=np.uint8))
    dense = _dense()
    dense[0, 5:9, 10:12] = False  # no overlap with mask 1 for the comparison
    colours = [(255, 0, 0), (0, 200, 0), (0, 0, 255)]
    want = draw_segmentation_masks(image, torch.from_numpy(dense), alpha=0.55, colors=colours)
    got = _paint_instances(image.clone(), InstanceMasks.from_dense(dense), colours, 0.55)
    covered = torch.from_numpy(dense.any(axis=0))
    assert covered.any() and torch.equal(got[:, covered], want[:, covered])
    assert torch.equal(got[:, ~covered], image[:, ~covered])
    dense[0, 6, 11] = True  # now in masks 0 and 1: mask 1's colour
    got = _paint_instances(image.clone(), InstanceMasks.from_dense(dense), colours, 0.55)
    assert torch.equal(got[:, 6, 11], want[:, 6, 11])  # as when mask 1 alone covered it
