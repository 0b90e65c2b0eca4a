"""Class lists per head: the semantic head may segment its own classes ("stuff" such as road or
sky beside, or instead of, the detection categories).

``model.sem.class_names`` empty (the default): the semantic head segments the detection
categories, id ``k + 1`` = category ``k``. Set: id ``k + 1`` = ``sem.class_names[k]``, matched to
every source by name; 0 is "background / none of these classes" and 255 is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visionmtl.structures import BACKGROUND, IGNORE_INDEX, ClassSpec, check_sem_class_count


def coco_sem_table(category_names: Sequence[str], sem_names: Sequence[str]) -> np.ndarray:
    """Lookup table ``[K + 1]`` int64 from a COCO set's semantic ids (0 background, ``k + 1``
    category ``k``; crowd is handled by the caller) to the semantic head's ids.

    A category that is not a semantic class becomes 0 ("none of these classes"). Background
    stays 0 only when every semantic class is a category of the set; otherwise the set cannot tell
    a background pixel from an unlabelled class (e.g. "road" in an instances-only set), so
    background becomes 255 (ignored), never a false "background" label."""
    check_sem_class_count(sem_names)
    head = {name: index + 1 for index, name in enumerate(sem_names)}
    table = np.zeros(len(category_names) + 1, np.int64)
    table[0] = 0 if set(sem_names) <= set(category_names) else IGNORE_INDEX
    for label, name in enumerate(category_names):
        table[label + 1] = head.get(name, 0)
    return table


def semantic_ids(classes: ClassSpec) -> tuple[np.ndarray, dict[int, str]]:
    """Ids the Predictor reports per semantic class: ``(ids [S + 1] int64, id -> name)``.

    Index 0 (background) is 0. Without an own list index k + 1 is category k's JSON id. With one,
    a class that is also a detection category (by name) reports that category's id and any other
    ("stuff") class gets the next id above every category id, in list order. E.g. categories
    {1: person}, own list [road, person] -> ids [0, 2, 1]."""
    category_ids, class_names = classes.category_ids, classes.class_names
    if not classes.has_own_sem_classes:
        ids = [0, *category_ids]
        names = {0: BACKGROUND, **dict(zip(ids[1:], class_names, strict=True))}
        return np.asarray(ids, np.int64), _without_unused_background(names, classes)
    by_name: dict[str, int] = {}
    for name, category_id in zip(class_names, category_ids, strict=True):
        by_name.setdefault(name, category_id)  # a repeated name keeps its first id
    next_id = max([0, *category_ids]) + 1
    ids = [0]
    for name in classes.sem_names:
        if name in by_name:
            ids.append(by_name[name])
        else:
            ids.append(next_id)
            next_id += 1
    names = {0: BACKGROUND, **dict(zip(ids[1:], classes.sem_names, strict=True))}
    return np.asarray(ids, np.int64), _without_unused_background(names, classes)


def _without_unused_background(names: dict[int, str], classes: ClassSpec) -> dict[int, str]:
    """``names`` less id 0 when the head predicts no background (see ``ClassSpec``)."""
    return names if classes.sem_background else {k: v for k, v in names.items() if k != 0}
