"""What ``visionmtl predict`` and :meth:`Predictor.stream` read: image files, folders, glob
patterns and video files, one frame at a time (a long video is never held in memory)."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from visionmtl.api.io import ImageInput, load_rgb
from visionmtl.data.semantic_png import IMAGE_SUFFIXES
from visionmtl.errors import InputError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


@dataclass
class Frame:
    """One image to predict on: ``image`` [H, W, 3] uint8 RGB; ``path`` its file (None for an
    in-memory image); ``index`` the frame number in a video (None for a still image); ``fps``
    the video's frame rate."""

    image: np.ndarray
    path: Path | None = None
    index: int | None = None
    fps: float | None = None

    @property
    def name(self) -> str:
        """``file`` or ``file#frame`` (``<array>`` for an in-memory image)."""
        base = str(self.path) if self.path is not None else "<array>"
        return base if self.index is None else f"{base}#{self.index}"


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def expand_sources(sources: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their image and video files, sorted, not recursive) and glob patterns
    (``data/*.jpg``, ``clips/**/*.mp4``) -> the files, in the order given. InputError for a path
    that does not exist, a pattern that matches nothing, or a folder without images or videos."""
    files: list[Path] = []
    for source in sources:
        text = str(source)
        if glob.has_magic(text) and not Path(text).exists():  # img[1].jpg may be a file
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            matches = [p for p in matches if _readable_suffix(p)]
            if not matches:
                raise InputError(f"{text}: the pattern matches no image or video file")
            files.extend(matches)
        elif Path(text).is_dir():
            found = sorted(p for p in Path(text).iterdir() if _readable_suffix(p))
            if not found:
                raise InputError(f"{text}: a folder without image or video files")
            files.extend(found)
        elif Path(text).is_file():
            files.append(Path(text))
        else:
            raise InputError(f"{text}: no such file, folder or matching pattern")
    return files


def _readable_suffix(path: Path) -> bool:
    suffix = path.suffix.lower()
    return path.is_file() and (suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES)


def iter_frames(sources: ImageInput | Iterable[ImageInput]) -> Iterator[Frame]:
    """Every frame of ``sources`` in order: a path, pattern or folder (see
    :func:`expand_sources`), a PIL image or array, or an iterable of these. Video files are
    decoded with OpenCV one frame at a time."""
    single = isinstance(sources, (str, Path, np.ndarray, Image.Image))
    for item in [sources] if single else sources:
        if isinstance(item, (str, Path)):
            for path in expand_sources([item]):
                yield from _video_frames(path) if is_video(path) else [Frame(load_rgb(path), path)]
        else:
            yield Frame(load_rgb(item))


def _video_frames(path: Path) -> Iterator[Frame]:
    import cv2  # opencv comes with albumentations

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path}: not a readable video (OpenCV could not open it)")
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    index = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(np.ascontiguousarray(bgr[:, :, ::-1]), path, index, fps)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise InputError(f"{path}: a video with no readable frame")
