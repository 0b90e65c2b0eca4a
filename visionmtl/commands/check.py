"""Check data before training; print every problem (file, id, fix hint) and a one-line summary.

  visionmtl check JSON IMAGES                        a COCO set
  visionmtl check --sem-images DIR --sem-masks DIR   a semantic PNG set
        [--class-names a,b,... | --ids 0=sky,1=building,...] [--ignore-ids 11,...]
  visionmtl check --config CONFIG [--set KEY=VALUE]  every set a training config names

--draw DIR (with JSON IMAGES or --sem-images/--sem-masks) also renders the ground truth of the
first --draw-limit images into DIR/<stem>_gt.png with the drawer the predictions use.

Exit codes: 0 no errors (warnings and info allowed), 1 errors found, 2 could not run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visionmtl.cli import run_tool


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ann_file", nargs="?", help="COCO annotation JSON")
    parser.add_argument(
        "image_dir", nargs="?", help="folder the JSON's file_name entries are relative to"
    )
    parser.add_argument("--sem-images", help="image folder of a semantic PNG set")
    parser.add_argument("--sem-masks", help="its PNG class maps (same file stems)")
    parser.add_argument(
        "--class-names", help="PNG ids by the default convention: id k = name k-1, 0 background"
    )
    parser.add_argument("--ids", help="PNG ids by a map of their own: 0=sky,1=building,...")
    parser.add_argument("--ignore-ids", default="", help="PNG ids never scored: 11,...")
    parser.add_argument("--config", help="a training config: check every set it names")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument("--json", help="also write the full report(s) as JSON to this file")
    parser.add_argument(
        "--no-images", action="store_true", help="COCO: check the JSON only, not the image files"
    )
    parser.add_argument("--draw", metavar="DIR", help="also draw the ground truth into DIR")
    parser.add_argument(
        "--draw-limit", type=int, default=16, help="images drawn by --draw (0: all; default 16)"
    )
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = _parser(prog)
    args = parser.parse_args(argv)
    modes = [bool(args.ann_file), bool(args.sem_masks or args.sem_images), bool(args.config)]
    if sum(modes) != 1:
        parser.error("give one of: JSON IMAGES, --sem-images/--sem-masks, or --config")
    if args.ann_file and not args.image_dir:
        parser.error("JSON needs its IMAGES folder")
    if modes[1] and not (args.sem_images and args.sem_masks):
        parser.error("--sem-images and --sem-masks go together")
    if args.class_names and args.ids:
        parser.error("declare the PNG ids with one of --class-names or --ids, not both")
    if args.ignore_ids and not (args.class_names or args.ids):
        parser.error("--ignore-ids needs the declared ids: --class-names or --ids")
    if args.draw and args.config:
        parser.error("--draw draws one set: give JSON IMAGES or --sem-images/--sem-masks")
    declared = _declared(args, parser) if modes[1] else None
    reports = []

    def run() -> None:
        import json

        from visionmtl.data import DataError

        reports.extend(_reports(args, declared))
        for report in reports:
            print(report.to_text())
        if args.json:
            documents = [json.loads(report.to_json()) for report in reports]
            text = json.dumps(documents[0] if len(documents) == 1 else documents, indent=2)
            try:
                Path(args.json).write_text(text + "\n")
            except OSError as error:
                raise DataError(f"{args.json}: cannot write the report ({error})") from None
            print(f"wrote {args.json}")
        if args.draw:
            written = _draw(args, declared)
            print(f"drew the ground truth of {len(written)} images into {args.draw}")

    code = run_tool(run)
    if code:
        return code
    return 0 if all(report.ok for report in reports) else 1


def _declared(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict | None:
    """The PNG id declaration of --class-names / --ids / --ignore-ids (None: none given)."""
    from visionmtl.data.semantic_png import declared_png_ids

    if not (args.class_names or args.ids):
        return None
    ids = _id_map(args.ids, parser)
    return declared_png_ids(_names(args.class_names), ids, _ints(args.ignore_ids, parser))


def _reports(args: argparse.Namespace, declared: dict | None) -> list:
    """The check reports of the mode ``args`` chose."""
    from visionmtl.data.checks import check_coco, check_png_set

    if args.ann_file:
        return [check_coco(args.ann_file, args.image_dir, check_images=not args.no_images)]
    if args.sem_masks:
        return [check_png_set(args.sem_images, args.sem_masks, declared)]
    from visionmtl.config import load_config
    from visionmtl.data.sources import check_data_sources

    cfg = load_config(args.config, args.set)
    return check_data_sources(cfg.data, check_images=not args.no_images)


def _draw(args: argparse.Namespace, declared: dict | None) -> list:
    """Render the ground truth of the checked set into ``args.draw``."""
    from visionmtl.api.ground_truth import coco_ground_truth, draw_ground_truth, png_ground_truth

    if args.ann_file:
        items = coco_ground_truth(args.ann_file, args.image_dir)
    else:
        items = png_ground_truth(args.sem_images, args.sem_masks, declared)
    return draw_ground_truth(items, args.draw, args.draw_limit)


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _ints(text: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--ignore-ids: expected comma-separated ids, got {text!r}")


def _id_map(text: str | None, parser: argparse.ArgumentParser) -> dict[int, str] | None:
    if not text:
        return None
    try:
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        return {int(key): name.strip() for key, name in pairs}
    except ValueError:
        parser.error(f"--ids: expected id=name pairs such as 0=sky,1=building, got {text!r}")


if __name__ == "__main__":
    sys.exit(main())
