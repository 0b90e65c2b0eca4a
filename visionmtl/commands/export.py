"""Export a trained model for serving: visionmtl export CHECKPOINT --format onnx --out DIR.

DIR gets model.onnx (the network up to the heads' raw outputs; dynamic batch and image size),
mask_head.onnx (models with instance masks: the mask head on the detected boxes) and model.json
(classes, input size and normalisation, post-processing settings). Load it with
`from visionmtl import OnnxPredictor; OnnxPredictor.from_export(DIR)`, called as Predictor.
Needs the export extra: pip install 'visionmtl[export]'. Files of an earlier export in DIR are
never overwritten (exit code 2); a failed export removes the files it wrote.
"""

from __future__ import annotations

import argparse
import sys

from visionmtl.cli import run_tool


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a checkpoint written by visionmtl train (best.pt)")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="the export format")
    parser.add_argument("--out", required=True, help="directory for the exported files")
    args = parser.parse_args(argv)

    def run() -> None:
        from visionmtl.api.onnx_export import export_onnx

        written = export_onnx(args.checkpoint, args.out)
        print(f"wrote {', '.join(str(path) for path in written.values())}")

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
