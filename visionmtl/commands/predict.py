"""Predict on images and videos: visionmtl predict CHECKPOINT SOURCE [SOURCE ...] --out-dir DIR.

SOURCE: image files, folders (their images and videos), glob patterns ('photos/*.jpg', quoted) and
video files (.mp4, .avi, .mov, ...). Results stream as they come, in flat memory: DIR gets
predictions.jsonl (one JSON record per image or video frame: source, frame, boxes, scores, labels,
mask areas, semantic pixel counts), an overlay <stem>_pred.png per image and an annotated
<stem>_pred.mp4 per video. An earlier prediction in DIR is never overwritten (exit code 2).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from visionmtl.cli import run_tool

GRID_MAX = 16  # --grid tiles the first overlays only: the stream keeps no list of all pictures


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("sources", nargs="+", help="image/video files, folders or glob patterns")
    parser.add_argument("--out-dir", required=True, help="where predictions.jsonl and overlays go")
    parser.add_argument("--score-thresh", type=float, default=0.3)
    parser.add_argument("--grid", help=f"also save the first {GRID_MAX} overlays tiled in this PNG")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images/frames")
    parser.add_argument("--no-overlays", action="store_true", help="predictions.jsonl only")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.grid and args.no_overlays:
        parser.error("--grid draws overlays: not with --no-overlays")
    if args.limit < 0:
        parser.error(f"--limit must be >= 0, got {args.limit}")
    if args.grid and Path(args.grid).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        parser.error(f"--grid {args.grid}: a .png or .jpg file")
    if args.grid and Path(args.grid).exists():
        parser.error(f"--grid {args.grid} already exists: choose a new file")

    def run() -> None:
        from PIL import Image

        from visionmtl.api import Predictor, image_grid
        from visionmtl.api.sources import expand_sources
        from visionmtl.api.writer import PredictionWriter, check_fresh

        pictures = []
        expand_sources(args.sources)  # a wrong path fails before the model loads
        check_fresh(args.out_dir)  # and so does an earlier prediction in --out-dir
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=args.device, score_thresh=args.score_thresh
        )
        with PredictionWriter(args.out_dir, overlays=not args.no_overlays) as writer:
            stream = predictor.stream(args.sources)
            if args.limit:
                stream = itertools.islice(stream, args.limit)
            for frame, result in stream:
                picture = writer.write(frame, result)
                if args.grid and len(pictures) < GRID_MAX:
                    pictures.append(picture)
        if pictures:
            Image.fromarray(image_grid(pictures)).save(args.grid)
        print(f"wrote {writer.count} predictions to {writer.out_dir}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
