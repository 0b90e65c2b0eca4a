"""Write the synthetic shapes data set: ``python tools/make_shapes.py OUT_DIR [--train N] ...``."""

from __future__ import annotations

import argparse
import sys

from visionmtl.data.synthetic import generate_shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the synthetic COCO-format shapes data set."
    )
    parser.add_argument("out_dir", help="output folder (annotations/ and images/ are written here)")
    parser.add_argument("--train", type=int, default=600, help="number of training images")
    parser.add_argument("--val", type=int, default=100, help="number of validation images")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    args = parser.parse_args(argv)
    try:
        paths = generate_shapes(args.out_dir, args.train, args.val, args.size, args.seed)
    except (ValueError, OSError) as error:
        print(f"make_shapes: error: {error}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
