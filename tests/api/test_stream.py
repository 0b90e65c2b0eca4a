"""Streaming prediction (visionmtl/api/sources.py, writer.py, Predictor.stream) and the
``visionmtl predict`` command on image files, folders, glob patterns and videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from visionmtl.api import InputError, Predictor
from visionmtl.api.sources import expand_sources, iter_frames
from visionmtl.commands import main


def write_video(path: Path, frames: list[np.ndarray], fps: float = 5.0) -> Path:
    """RGB frames [H, W, 3] uint8 -> an mp4 file."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


@pytest.fixture
def media(shapes_paths: dict, tmp_path: Path) -> Path:
    """A folder with two shapes images, a 3-frame video of them and a text file."""
    folder = tmp_path / "media"
    folder.mkdir()
    images = sorted(Path(shapes_paths["val_images"]).iterdir())[:2]
    for image in images:
        shutil.copy(image, folder / image.name)
    frames = [cv2.imread(str(images[k % 2]))[:, :, ::-1] for k in range(3)]
    write_video(folder / "zclip.mp4", frames)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_expand_sources_folders_patterns_and_errors(media: Path) -> None:
    files = expand_sources([media])
    assert [p.suffix for p in files] == [".png", ".png", ".mp4"]  # sorted; notes.txt skipped
    assert expand_sources([str(media / "*.mp4")]) == [media / "zclip.mp4"]
    assert expand_sources([str(media / "*")]) == files  # a pattern skips notes.txt too
    literal = media / "frame[1].png"  # a file whose name looks like a pattern
    shutil.copy(files[0], literal)
    assert expand_sources([literal]) == [literal]
    with pytest.raises(InputError, match="matches no image or video file"):
        expand_sources([str(media / "*.jpg")])
    with pytest.raises(InputError, match="no such file"):
        expand_sources([media / "missing.png"])
    empty = media / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="without image or video files"):
        expand_sources([empty])


def test_video_frames_come_one_by_one_in_rgb(tmp_path: Path) -> None:
    red = np.zeros((32, 48, 3), np.uint8)
    red[..., 0] = 255
    path = write_video(tmp_path / "red.mp4", [red] * 4, fps=7)
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == [0, 1, 2, 3] and frames[0].fps == pytest.approx(7)
    assert frames[0].image.shape == (32, 48, 3)
    assert frames[0].image[..., 0].mean() > 200 and frames[0].image[..., 2].mean() < 50
    assert frames[2].name == f"{path}#2"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(InputError, match="broken.mp4"):
        list(iter_frames(broken))


def test_stream_yields_each_batch_before_reading_the_next(trained_run: Path) -> None:
    """A result comes out before later frames are read: nothing collects the whole source."""
    predictor = Predictor.from_checkpoint(trained_run / "best.pt", batch_size=1)
    read = []

    def frames():
        for k in range(3):
            read.append(k)
            yield np.full((64, 64, 3), 40 * k, np.uint8)

    stream = predictor.stream(frames())
    frame, result = next(stream)
    assert read == [0] and result.image_size == (64, 64) and frame.index is None
    assert len(list(stream)) == 2 and read == [0, 1, 2]


def test_predict_command_writes_records_overlays_and_video(trained_run: Path, media: Path) -> None:
    out = media.parent / "pred"
    assert main(["predict", str(trained_run / "best.pt"), str(media), "--out-dir", str(out)]) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [None, None, 0, 1, 2]
    assert records[2]["source"] == str(media / "zclip.mp4") and "boxes" in records[0]
    assert len(list(out.glob("*_pred.png"))) == 2
    capture = cv2.VideoCapture(str(out / "zclip_pred.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
    # A second prediction into the same folder is refused; the first one's files stay.
    before = (out / "predictions.jsonl").read_bytes()
    assert main(["predict", str(trained_run / "best.pt"), str(media), "--out-dir", str(out)]) == 2
    assert (out / "predictions.jsonl").read_bytes() == before


def test_predict_command_limit_and_bad_source(trained_run: Path, media: Path) -> None:
    out = media.parent / "limited"
    ckpt = str(trained_run / "best.pt")
    args = ["predict", ckpt, str(media / "*.mp4"), "--out-dir", str(out), "--limit", "2"]
    assert main([*args, "--no-overlays"]) == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2
    assert not list(out.glob("*.mp4"))
    assert main(["predict", ckpt, str(media / "nothing.png"), "--out-dir", str(out / "x")]) == 2
    assert not (out / "x").exists()  # failed before writing anything
    assert main(["predict", ckpt, str(media), "--out-dir", str(out / "y"), "--limit", "-1"]) == 2
    grid = media / "grid.png"
    grid.write_bytes(b"an earlier picture")
    assert (
        main(["predict", ckpt, str(media), "--out-dir", str(out / "y"), "--grid", str(grid)]) == 2
    )
    assert grid.read_bytes() == b"an earlier picture"


def test_the_same_video_twice_gives_two_videos(trained_run: Path, media: Path) -> None:
    out = media.parent / "twice"
    clip = str(media / "zclip.mp4")
    assert main(["predict", str(trained_run / "best.pt"), clip, clip, "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["zclip_pred.mp4", "zclip_pred2.mp4"]


def test_result_to_dict_with_masks_and_no_detection() -> None:
    """A det+inst result with nothing above the threshold (masks [0, H, W]) still serialises."""
    from visionmtl.api import Result

    empty = Result(
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32),
        labels=np.zeros(0, np.int64),
        label_names=[],
        sem_seg=None,
        image_size=(8, 8),
        masks=np.zeros((0, 8, 8), bool),
    )
    assert empty.to_dict()["mask_areas"] == []
    two = Result(**{**empty.__dict__, "masks": np.ones((2, 8, 8), bool)})
    assert two.to_dict()["mask_areas"] == [64, 64]
