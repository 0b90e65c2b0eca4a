"""The vectorised COCO RLE string parser of the checks against the reference one."""

import random

import numpy as np
from pycocotools import mask as mask_utils

from visionmtl.data.checks._values import rle_issue, rle_string_counts, rle_string_runs


def test_vectorised_rle_parser_equals_the_reference_on_masks_and_on_junk() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):  # pycocotools' own encodings of random masks, sparse to dense
        height, width = (int(v) for v in rng.integers(1, 200, 2))
        mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
        text = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
        runs = rle_string_runs(text)
        assert runs is not None and list(runs) == rle_string_counts(text)
        assert rle_issue({"size": [height, width], "counts": text}, (height, width)) is None
    alphabet = [chr(code) for code in range(40, 120)]  # inside and outside the RLE alphabet
    picker = random.Random(0)
    outcomes = set()
    for _ in range(3000):
        text = "".join(picker.choice(alphabet) for _ in range(picker.randint(0, 16)))
        reference, runs = rle_string_counts(text), rle_string_runs(text)
        assert (runs is None) == (reference is None), text
        if runs is not None:
            assert list(runs) == reference, text
        outcomes.add(reference is None)
    assert outcomes == {True, False}  # both malformed and well-formed strings were drawn
    for text in ("€", "1é0", "0" * 4 + "\u0100"):  # not ASCII: no RLE character at all
        assert rle_string_runs(text) is None and rle_string_counts(text) is None
        assert rle_issue({"size": [1, 15], "counts": text}, (1, 15)) is not None
    # a run of more than 7 characters (a non-canonical zero-padded encoding) takes the slow path
    padded = "1" + "P" * 8 + "0"
    assert list(rle_string_runs(padded)) == rle_string_counts(padded) == [1, 0]
