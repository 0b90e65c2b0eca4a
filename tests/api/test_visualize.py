"""Result.plot: semantic classes with a legend, instance masks only inside themselves, switches."""

from __future__ import annotations

import numpy as np

from visionmtl.api import Result


def _result() -> Result:
    """A 40x60 image: sky above road (no background class), one person box with a mask."""
    sem = np.full((40, 60), 1, np.int64)
    sem[20:] = 4
    masks = np.zeros((1, 40, 60), bool)
    masks[0, 10:30, 20:30] = True
    return Result(
        boxes=np.array([[18.0, 8.0, 32.0, 32.0]], np.float32),
        scores=np.array([0.9], np.float32),
        labels=np.array([1]),
        label_names=["person"],
        sem_seg=sem,
        image_size=(40, 60),
        masks=masks,
        sem_class_names={1: "sky", 4: "road"},
    )


def test_masks_are_drawn_only_inside_and_sem_gets_a_legend() -> None:
    image = np.full((40, 60, 3), 128, np.uint8)
    result = _result()
    only_masks = result.plot(image, sem=False, boxes=False)
    assert only_masks.shape == image.shape  # no semantic classes shown: no legend
    changed = (only_masks != image).any(axis=2)
    assert np.array_equal(changed, result.masks[0])
    full = result.plot(image)
    assert full.shape[0] == 40 and full.shape[1] > 60  # the legend strip on the right
    legend = full[:, 60:]
    assert (legend != 255).any()  # colour swatches and names
    # the semantic colours differ between sky and road; background would be left clear
    sem_only = result.plot(image, masks=False, boxes=False, legend=False)
    assert sem_only.shape == image.shape
    assert not np.array_equal(sem_only[5, 5], sem_only[35, 5])
    # a box outline is drawn on its edge, not elsewhere on the clear image
    boxes_only = result.plot(image, sem=False, masks=False)
    assert (boxes_only[8:33, 18] != 128).any() and (boxes_only[38, 2] == 128).all()
