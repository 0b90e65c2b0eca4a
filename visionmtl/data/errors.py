"""The data layer's own error type."""

from __future__ import annotations


class DataError(ValueError):
    """A data set file (annotation JSON or image) is missing, unreadable or malformed.

    Messages name the file, the annotation or image id where there is one, the problem and a hint
    for fixing it, e.g. ``annotations/val.json: annotation 1532 (image 7): category_id 9 is not
    declared in "categories"; declare it or remove the annotation``.
    """
