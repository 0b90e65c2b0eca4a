"""Class lists per head: the semantic head may segment its own classes ("stuff" such as road or
sky beside, or instead of, the detection categories).

``model.sem.class_names`` empty (the default): the semantic head segments the detection
categories, id ``k + 1`` = category ``k``. Set: id ``k + 1`` = ``sem.class_names[k]``, matched to
every source by name; 0 is "background / none of these classes" and 255 is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visionmtl.config import ModelConfig

IGNORE_INDEX: int = 255


def sem_class_names(model: ModelConfig) -> list[str]:
    """The semantic head's classes without background: its own list, else the detection classes."""
    return list(model.sem.class_names) or list(model.class_names)


def coco_sem_table(category_names: Sequence[str], sem_names: Sequence[str]) -> np.ndarray:
    """Lookup table ``[max(K + 1, 256)]`` int64 from a COCO set's semantic ids (0 background,
    ``k + 1`` category ``k``, 255 crowd) to the semantic head's ids.

    A category that is not a semantic class becomes 0 ("none of these classes"). Background
    stays 0 only when every semantic class is a category of the set; otherwise the set cannot tell
    a background pixel from an unlabelled class (e.g. "road" in an instances-only set), so
    background becomes 255 (ignored), never a false "background" label."""
    head = {name: index + 1 for index, name in enumerate(sem_names)}
    table = np.zeros(max(len(category_names) + 1, IGNORE_INDEX + 1), np.int64)
    table[0] = 0 if set(sem_names) <= set(category_names) else IGNORE_INDEX
    for label, name in enumerate(category_names):
        table[label + 1] = head.get(name, 0)
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


def semantic_ids(
    category_ids: Sequence[int], class_names: Sequence[str], sem_names: Sequence[str]
) -> tuple[np.ndarray, dict[int, str]]:
    """Ids the Predictor reports per semantic class: ``(ids [S + 1] int64, id -> name)``.

    Index 0 (background) is 0; a semantic class that is also a detection category reports that
    category's JSON id; any other ("stuff") class gets the next id above every category id, in
    list order. E.g. categories {1: person}, sem classes [road, person] -> ids [0, 2, 1]."""
    by_name = dict(zip(class_names, category_ids, strict=True))
    next_id = max([0, *category_ids]) + 1
    ids = [0]
    for name in sem_names:
        if name in by_name:
            ids.append(int(by_name[name]))
        else:
            ids.append(next_id)
            next_id += 1
    names = {0: "background", **{i: n for i, n in zip(ids[1:], sem_names, strict=True)}}
    return np.asarray(ids, np.int64), names
