"""Hostile COCO JSON: checks and CocoDataset raise nothing but DataError, whatever the content."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from visionmtl.data import CocoDataset, DataError, check_coco

HEIGHT, WIDTH = 6, 8

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)
_junk = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_coord = st.one_of(st.integers(-2, 10), st.floats(-2, 10), _scalars)


def _maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes junk."""
    return st.one_of(valid, valid, valid, _junk)


_segmentation = st.one_of(
    st.none(),
    st.lists(st.lists(_coord, max_size=9), max_size=3),
    st.fixed_dictionaries(
        {
            "size": _maybe(st.just([HEIGHT, WIDTH])),
            "counts": st.one_of(
                st.lists(st.integers(-2, 50), max_size=5),
                st.just([0, HEIGHT * WIDTH]),
                st.text(max_size=6),
            ),
        }
    ),
    _junk,
)


def _entry(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """An object with some fields dropped, or (rarely) not an object at all."""
    present = st.fixed_dictionaries(
        {}, optional={key: _maybe(value) for key, value in fields.items()}
    )
    full = st.fixed_dictionaries({key: _maybe(value) for key, value in fields.items()})
    return st.one_of(full, full, present, _junk)


_images = st.lists(
    _entry(
        {
            "id": st.sampled_from([1, 2, 3, 4, 1, 2, 3, 4, 2**63]),
            "file_name": st.sampled_from(["a.png", "bad.png", "missing.png", "half.png"]),
            "height": st.just(HEIGHT),
            "width": st.just(WIDTH),
        }
    ),
    max_size=4,
)
_annotations = st.lists(
    _entry(
        {
            "id": st.integers(1, 5),
            "image_id": st.integers(1, 4),
            "category_id": st.integers(1, 3),
            "bbox": st.lists(_coord, min_size=4, max_size=4),
            "segmentation": _segmentation,
            "iscrowd": st.sampled_from([0, 1]),
        }
    ),
    max_size=5,
)
_categories = st.lists(_entry({"id": st.integers(1, 3), "name": st.text(max_size=3)}), max_size=3)
_data = st.one_of(
    st.fixed_dictionaries(
        {"images": _images, "annotations": _annotations, "categories": _categories}
    ),
    st.fixed_dictionaries(
        {"images": _maybe(_images), "annotations": _maybe(_annotations), "categories": _junk}
    ),
    _junk,
)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """An image folder: a good 6x8 PNG, a garbage file and a truncated PNG."""
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        noise = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / "a.png")
        (root / "bad.png").write_bytes(b"\x89PNG junk")
        (root / "half.png").write_bytes((root / "a.png").read_bytes()[:40])
        yield root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_data)
def test_hostile_json_only_raises_data_error(folder: Path, data: Any) -> None:
    ann_file = folder / "ann.json"
    ann_file.write_text(json.dumps(data))
    report = check_coco(ann_file, folder)
    report.to_text()
    assert json.loads(report.to_json())["ok"] == report.ok
    for policy in ("error", "skip", "fix"):
        try:
            dataset = CocoDataset(ann_file, folder, on_invalid=policy, max_bad_fraction=0.5)
        except DataError:
            continue
        if policy == "error":  # the dataset checks the JSON only; files when loaded
            assert check_coco(ann_file, folder, check_images=False).ok
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index in range(len(dataset)):
                try:
                    image, target = dataset[index]
                except DataError:
                    continue
                assert image.shape == (3, HEIGHT, WIDTH)
                assert target["boxes"].shape[0] == target["labels"].shape[0]
