"""Panoptic merge: higher scores win overlaps, segments never overlap, stuff fills the rest."""

import numpy as np

from visionmtl.api.panoptic import merge_panoptic


def test_overlaps_go_to_the_higher_score_and_stuff_fills_the_rest() -> None:
    masks = np.zeros((3, 10, 10), bool)
    masks[0, 0:6, 0:6] = True  # score 0.6
    masks[1, 3:9, 3:9] = True  # score 0.9, overlaps mask 0 in [3:6, 3:6]
    masks[2, 4:6, 4:6] = True  # score 0.8, entirely under mask 1 -> dropped
    sem = np.zeros((10, 10), np.int64)
    sem[:, 9] = 5
    id_map, segments = merge_panoptic(
        masks, np.array([0.6, 0.9, 0.8]), np.array([1, 2, 1]), sem, stuff_area_thresh=1
    )
    assert [(s.category_id, s.isthing) for s in segments] == [(2, True), (1, True), (5, False)]
    assert (id_map[3:9, 3:9] == 1).all()  # highest score painted whole
    assert segments[1].area == 36 - 9  # mask 0 keeps its free part only
    assert segments[2].area == 10  # column 9 all stuff (instances never reach it)
    ids, counts = np.unique(id_map[id_map > 0], return_counts=True)
    assert dict(zip(ids.tolist(), counts.tolist(), strict=True)) == {s.id: s.area for s in segments}


def test_low_scores_and_mostly_hidden_instances_are_dropped() -> None:
    masks = np.ones((2, 4, 4), bool)
    id_map, segments = merge_panoptic(masks, np.array([0.9, 0.3]), np.array([1, 1]), None)
    assert len(segments) == 1 and (id_map == 1).all()


def test_thing_regions_of_the_semantic_map_are_not_stuff() -> None:
    masks = np.zeros((1, 6, 6), bool)
    masks[0, :3, :3] = True
    sem = np.zeros((6, 6), np.int64)
    sem[:, :] = 1  # category 1 (a thing) predicted everywhere by the semantic head
    sem[5, :] = 9  # stuff
    id_map, segments = merge_panoptic(
        masks, np.array([0.9]), np.array([1]), sem, stuff_area_thresh=1, thing_ids=[1]
    )
    assert [(s.category_id, s.isthing) for s in segments] == [(1, True), (9, False)]
    assert (id_map[3:5] == 0).all()  # thing pixels without an instance stay void
