"""Errors for users: every one subclasses :class:`VisionMTLError`, so a command line catches one type.

Messages name the file, key or id at fault and say what to change; library code raises them and
the `visionmtl` command (visionmtl/cli.py) prints them as one line with exit code 2.
"""

from __future__ import annotations


class VisionMTLError(Exception):
    """Base class of the errors that describe bad input or a run that cannot go on, not bugs."""


class ConfigError(VisionMTLError, ValueError):
    """A config file, dict or override is invalid; the message names the source and the key."""


class DataError(VisionMTLError, ValueError):
    """A data set file (annotation JSON, image or label PNG) is missing, unreadable or malformed.

    Messages name the file, the annotation or image id where there is one, the problem and a hint
    for fixing it, e.g. ``annotations/val.json: annotation 1532 (image 7): category_id 9 is not
    declared in "categories"; declare it or remove the annotation``.
    """


class BackboneError(VisionMTLError, RuntimeError):
    """The backbone could not be built (unknown name, missing weights, offline hub)."""


class CheckpointError(VisionMTLError, RuntimeError):
    """A checkpoint file is missing, unreadable or not a visionmtl checkpoint."""


class TrainingError(VisionMTLError, RuntimeError):
    """Training cannot go on (non-finite loss, nothing to train on, ranks out of step)."""


class InputError(VisionMTLError, ValueError):
    """An input image cannot be used (missing file, not an image, unsupported array)."""


class OutputExistsError(VisionMTLError, FileExistsError):
    """An output file exists already and is not overwritten (it holds earlier results); the
    message names it and says how to write elsewhere."""


class ExportError(VisionMTLError, ValueError):
    """An export directory (``visionmtl export``) is missing a file, or holds another format or
    version than this visionmtl reads (the message names the file), or the ``export`` extra
    (onnx, onnxruntime) is not installed."""
