"""The run directory: resolved config, package versions and git commit beside the outputs."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

from visionmtl.config import Config, save_config


def _git_commit() -> str | None:
    """The commit of the source tree visionmtl runs from, with '-dirty' if it has changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment_info() -> dict[str, str | None]:
    """Versions of python and the key packages, and the git commit."""
    import albumentations
    import pycocotools
    import timm
    import torch
    import torchvision

    import visionmtl

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "visionmtl": visionmtl.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "albumentations": albumentations.__version__,
        "pycocotools": getattr(pycocotools, "__version__", "unknown"),
        "git_commit": _git_commit(),
    }


def prepare_run_dir(output_dir: str | Path, cfg: Config) -> Path:
    """Create ``output_dir`` and write ``config.yaml`` and ``env.json`` into it."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, output_dir / "config.yaml")
    (output_dir / "env.json").write_text(json.dumps(environment_info(), indent=2) + "\n")
    return output_dir
