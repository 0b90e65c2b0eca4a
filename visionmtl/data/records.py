"""Compact storage of per-image annotation records, and a cache of checked annotation files.

A list of Python dicts is copied page by page into every forked DataLoader worker as soon as the
worker reads it (reference counts are written into the objects: copy-on-read), ~1.3 GB per worker
for COCO train. :class:`PackedRecords` keeps the records pickled in one numpy byte buffer instead
(as Detectron2's ``DatasetFromList(serialize=True)``): a handful of Python objects whatever the
size of the set, shared by the workers without copying, unpickled one record per access.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

# Bump when what is cached changes (the records' layout or the checks), so old caches are unused.
CACHE_VERSION = 1


class PackedRecords:
    """A read-only sequence of picklable records kept as one ``uint8`` buffer plus ``int64``
    offsets; ``records[i]`` unpickles a fresh copy of record ``i`` (callers may change it)."""

    def __init__(self, records: Iterable[Any]) -> None:
        blobs = [pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL) for record in records]
        self._offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        np.cumsum([len(blob) for blob in blobs], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        index %= len(self)
        start, end = self._offsets[index], self._offsets[index + 1]
        return pickle.loads(self._buffer[start:end].data)

    def __iter__(self):
        return (self[index] for index in range(len(self)))


def cache_dir(enabled: bool = True) -> Path | None:
    """Where annotation caches go: ``$VISIONMTL_CACHE`` if set, else ``$XDG_CACHE_HOME/visionmtl``
    (``~/.cache/visionmtl``); None when not ``enabled`` (``data.cache: false``)."""
    if not enabled:
        return None
    if os.environ.get("VISIONMTL_CACHE"):
        return Path(os.environ["VISIONMTL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "visionmtl"


def cache_key(path: str | Path, *settings: Any) -> str:
    """A key that changes when the file at ``path`` changes or any of ``settings`` (their
    ``repr``) does: its resolved path and a BLAKE2 digest of its bytes (~1 GB/s; modification
    times alone can miss a rewrite within the file system's clock granularity)."""
    resolved = Path(path).resolve()
    with open(resolved, "rb") as handle:
        digest = hashlib.file_digest(handle, "blake2b").hexdigest()
    identity = repr((CACHE_VERSION, _code_identity(), str(resolved), digest, settings))
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


@functools.cache
def _code_identity() -> str:
    """A hash of the code whose output is cached (the checks, the cleaning, the packing), so a
    visionmtl with other checks never reads an older version's results."""
    data_dir = Path(__file__).resolve().parent
    sources = sorted((data_dir / "checks").glob("*.py"))
    sources += [data_dir / "coco_index.py", data_dir / "records.py"]
    digest = hashlib.blake2b()
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def cached(path: Path, build: Callable[[], T]) -> T:
    """``build()``, or its result stored in the file ``path`` by an earlier call.

    The file is written atomically (a temporary file renamed), so
    concurrent processes (DDP ranks, workers) never read a partial one; one that cannot be read
    (truncated, another version's classes) is rebuilt and replaced. A cache directory that cannot
    be written only costs the cache, never the run."""
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except Exception:  # noqa: BLE001 - missing or unreadable: rebuilt, the data file is the truth
        pass
    value = build()
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            temporary = handle.name
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.chmod(temporary, 0o644 & ~_umask())  # as a plain open() would (mkstemp makes 0600)
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
