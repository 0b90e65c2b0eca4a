"""What ``visionmtl predict`` writes as it streams: one JSON line per image or video frame, an
overlay picture per image and an annotated video per video file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from visionmtl.api.result import Result
from visionmtl.api.sources import Frame
from visionmtl.errors import OutputExistsError

PREDICTIONS_FILE = "predictions.jsonl"


class PredictionWriter:
    """Write each (frame, result) as it comes; holds one open video at a time, never a list of
    frames. ``out_dir`` must not hold an earlier ``predictions.jsonl`` (nothing is overwritten).

    Files: ``predictions.jsonl`` (``source``, ``frame`` (None for an image), then
    :meth:`Result.to_dict`), ``<stem>_pred.png`` per image and ``<stem>_pred.mp4`` per video
    (``overlays=False``: none). ``plot_options`` go to :meth:`Result.plot`."""

    def __init__(self, out_dir: str | Path, overlays: bool = True, **plot_options: Any) -> None:
        self.out_dir = Path(out_dir)
        records = self.out_dir / PREDICTIONS_FILE
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:  # "x": fails rather than overwrite, also against a prediction started meanwhile
            self.records: IO[str] = open(records, "x")  # noqa: SIM115 - closed by close()
        except FileExistsError:
            raise _exists(records) from None
        self.overlays, self.plot_options = overlays, plot_options
        self.count = 0
        self._video: Any = None  # cv2.VideoWriter of the video being written
        self._video_source: Path | None = None
        self._taken: set[str] = set()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, frame: Frame, result: Result) -> np.ndarray | None:
        """Record ``result``; returns the overlay picture [H, W', 3] (None without overlays)."""
        record = {"source": frame.name if frame.path is None else str(frame.path)}
        record["frame"] = frame.index
        self.records.write(json.dumps({**record, **result.to_dict()}) + "\n")
        self.count += 1
        if not self.overlays:
            return None
        if frame.index is None:
            picture = result.plot(frame.image, **self.plot_options)
            Image.fromarray(picture).save(self._free(frame, ".png"))
        else:  # every class in the legend: one frame size for the whole video
            picture = result.plot(frame.image, **{"legend_all": True, **self.plot_options})
            self._video_frame(frame, picture)
        return picture

    def _video_frame(self, frame: Frame, picture: np.ndarray) -> None:
        import cv2

        if frame.path != self._video_source or frame.index == 0:  # a new video (or again)
            self._close_video()
            size = (picture.shape[1], picture.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            path = self._free(frame, ".mp4")
            self._video = cv2.VideoWriter(str(path), fourcc, frame.fps or 25.0, size)
            if not self._video.isOpened():
                raise OSError(f"{path}: OpenCV cannot write an mp4v video here")
            self._video_source, self._size = frame.path, size
        if (picture.shape[1], picture.shape[0]) != self._size:  # frames of another size
            picture = cv2.resize(picture, self._size)
        self._video.write(np.ascontiguousarray(picture[:, :, ::-1]))

    def _free(self, frame: Frame, suffix: str) -> Path:
        stem = frame.path.stem if frame.path is not None else "image"
        return free_path(self.out_dir, f"{stem}_pred", suffix, self._taken)

    def _close_video(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video, self._video_source = None, None

    def close(self) -> None:
        self._close_video()
        self.records.close()


def check_fresh(out_dir: str | Path) -> None:
    """OutputExistsError if ``out_dir`` holds a prediction: checked before a model loads."""
    records = Path(out_dir) / PREDICTIONS_FILE
    if records.exists():
        raise _exists(records)


def _exists(records: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{records} already exists (an earlier prediction); pass a new --out-dir"
    )


def free_path(out_dir: Path, stem: str, suffix: str, taken: set[str]) -> Path:
    """``out_dir/<stem><suffix>``, or ``<stem>2<suffix>``, ... where that name is in ``taken``
    (written by this run: two sources may share a stem) or exists (never overwritten); the name
    is added to ``taken``."""
    name, number = f"{stem}{suffix}", 2
    while name in taken or (out_dir / name).exists():
        name, number = f"{stem}{number}{suffix}", number + 1
    taken.add(name)
    return out_dir / name
