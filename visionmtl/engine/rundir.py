"""The run directory: which one a training writes to (never over an earlier run unless asked),
and the resolved config, package versions and git commit beside the outputs."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from visionmtl.config import Config, save_config
from visionmtl.engine.distributed import DistInfo, broadcast_from_main
from visionmtl.errors import TrainingError


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


# Created (exclusively) by the training that takes a directory, before any other file: two
# trainings started at once into runs/exp cannot both take runs/exp2.
CLAIM_FILE = ".visionmtl_run"
# Files whose presence means a directory holds a run (a fresh training must not overwrite it).
RUN_FILES = (CLAIM_FILE, "config.yaml", "last.pt", "best.pt", "metrics.jsonl")


def holds_run(directory: Path) -> bool:
    """Whether ``directory`` holds a training's outputs (any of :data:`RUN_FILES`)."""
    return any((directory / name).exists() for name in RUN_FILES)


def next_free_run_dir(output_dir: str | Path, taken: Callable[[Path], bool] = holds_run) -> Path:
    """``output_dir`` if it holds no run (``taken`` is False), else the first of ``output_dir`` +
    2, 3, ... that holds none (``runs/exp`` -> ``runs/exp2``, as Ultralytics numbers its runs)."""
    output_dir = Path(output_dir)
    base = output_dir if output_dir.name else output_dir.resolve()  # "." has no name to number
    candidate, number = output_dir, 2
    while taken(candidate):
        candidate, number = base.with_name(f"{base.name}{number}"), number + 1
    return candidate


def choose_run_dir(output_dir: str | Path, exist_ok: bool, resume: bool) -> Path:
    """Where a training writes: ``output_dir`` itself when resuming it or with ``exist_ok`` (a fresh
    run then replaces what is there), else :func:`next_free_run_dir`. Created at once: train.log
    records from the first line."""
    if exist_ok or resume:
        chosen = Path(output_dir)
        chosen.mkdir(parents=True, exist_ok=True)
        (chosen / CLAIM_FILE).touch()
        return chosen
    while True:
        chosen = next_free_run_dir(output_dir)
        chosen.mkdir(parents=True, exist_ok=True)
        try:
            (chosen / CLAIM_FILE).open("x").close()  # atomic: only one process creates it
        except FileExistsError:
            continue  # another training took it a moment ago: it now holds a run, try the next
        return chosen


def agree_on_run_dir(requested: Path, exist_ok: bool, resume: bool, dist_info: DistInfo) -> Path:
    """:func:`choose_run_dir`, decided by rank 0 and the same on every rank: ranks looking for
    themselves would race with rank 0's first files."""
    chosen: Path | str | None = None
    if dist_info.is_main:
        try:
            chosen = choose_run_dir(requested, exist_ok, resume)
        except OSError as error:  # sent on: the other ranks must not wait for a path forever
            chosen = f"{requested}: cannot create the run directory ({error})"
    chosen = broadcast_from_main(chosen, dist_info)
    if isinstance(chosen, str):
        raise TrainingError(chosen)
    return chosen


def run_dir_line(requested: Path, chosen: Path) -> str:
    """A training's first printed line: where it writes, and why not where asked."""
    if chosen == requested:
        return f"run directory: {chosen}"
    return (
        f"run directory: {chosen} ({requested} holds an earlier run: --exist-ok reuses it, "
        "--resume continues it)"
    )


def prepare_run_dir(output_dir: str | Path, cfg: Config) -> Path:
    """Create ``output_dir`` and write ``config.yaml`` and ``env.json`` into it."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, output_dir / "config.yaml")
    (output_dir / "env.json").write_text(json.dumps(environment_info(), indent=2) + "\n")
    return output_dir
