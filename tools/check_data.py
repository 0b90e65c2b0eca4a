"""Check a COCO data set: python tools/check_data.py JSON IMAGES [--json OUT] [--no-images].

Prints the problems grouped by code (annotation id, image file, fix hint) and a one-line summary.
Exit codes: 0 no errors (warnings and info allowed), 1 errors found, 2 could not run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ann_file", help="COCO annotation JSON")
    parser.add_argument("image_dir", help="folder the JSON's file_name entries are relative to")
    parser.add_argument("--json", help="also write the full report as JSON to this file")
    parser.add_argument(
        "--no-images", action="store_true", help="check the JSON only, not the image files"
    )
    args = parser.parse_args(argv)
    reports = []

    def run() -> None:
        from visionmtl.data import DataError, check_coco

        report = check_coco(args.ann_file, args.image_dir, check_images=not args.no_images)
        print(report.to_text())
        if args.json:
            try:
                Path(args.json).write_text(report.to_json() + "\n")
            except OSError as error:
                raise DataError(f"{args.json}: cannot write the report ({error})") from None
            print(f"wrote {args.json}")
        reports.append(report)

    code = run_tool(run)
    if code:
        return code
    return 0 if reports[0].ok else 1


if __name__ == "__main__":
    sys.exit(main())
