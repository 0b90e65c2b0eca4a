"""Exact resume mid-epoch with loader workers, crash-safe checkpoints, NaN policy, torchrun."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_train_overrides
from visionmtl.config import load_config
from visionmtl.engine.checkpoint import load_checkpoint
from visionmtl.engine.trainer import train
from visionmtl.errors import TrainingError

REPO = Path(__file__).resolve().parents[2]


def resume_cfg(paths: dict, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    overrides = tiny_train_overrides(paths, out) + [
        "data.val_ann=",
        "data.num_workers=1",
        "data.batch_size=8",
        "train.epochs=2",
        *extra,
    ]
    return load_config(None, overrides)


@pytest.mark.parametrize("from_weights", [False, True], ids=["scratch", "frozen"])
def test_interrupted_and_resumed_run_equals_uninterrupted(
    shapes_paths: dict, tmp_path: Path, resnet18_weights: Path, from_weights: bool
) -> None:
    """From weights: with frozen BatchNorm and stages (resolved again on resume)."""
    weights = [f"model.backbone.weights={resnet18_weights}"] if from_weights else []
    straight = tmp_path / "straight"
    train(resume_cfg(shapes_paths, straight, *weights), straight)
    resumed = tmp_path / "resumed"
    cfg = resume_cfg(shapes_paths, resumed, *weights)
    result = train(cfg, resumed, stop_after_steps=4)  # 3 steps per epoch: stops in epoch 2
    assert result["interrupted"]
    _, state = load_checkpoint(resumed / "last.pt")
    assert (state["epoch"], state["batch"], state["step"]) == (1, 1, 4)
    train(cfg, resumed, resume=True)
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(resumed / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sigkill_while_saving_keeps_previous_checkpoint(tmp_path: Path) -> None:
    script = f"""
import sys, torch
sys.path.insert(0, {str(REPO)!r})
from visionmtl.config import Config
from visionmtl.engine.checkpoint import save_checkpoint
from visionmtl.structures import ClassSpec
model = torch.nn.Linear(4, 4)
model.classes = ClassSpec.numbered(1)
save_checkpoint({str(tmp_path / "last.pt")!r}, Config(), model, payload=torch.zeros(1))
print("first", flush=True)
while True:
    save_checkpoint({str(tmp_path / "last.pt")!r}, Config(), model, payload=torch.randn(8_000_000))
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "first"
    time.sleep(1.5)  # several 32 MB saves in flight
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    _, state = load_checkpoint(tmp_path / "last.pt")  # whole: either the first or a later save
    assert "payload" in state and "model" in state


def test_nan_loss_stops_with_debug_file_naming_files(shapes_paths: dict, tmp_path: Path) -> None:
    cfg = resume_cfg(
        shapes_paths, tmp_path, "data.num_workers=0", "train.lr=1e30", "train.clip_grad_norm=0"
    )
    with pytest.raises(
        TrainingError, match=r"non-finite loss in task.*step \d+; batch files: \['\d+\.png'"
    ):
        train(cfg, tmp_path)
    debug = torch.load(tmp_path / "nan_debug.pt", weights_only=True)
    assert debug["files"] and debug["images"].ndim == 4


def test_nan_skip_policy_keeps_batchnorm_statistics(
    shapes_paths: dict, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from visionmtl.models.heads import semantic

    original = semantic.SemanticFPNHead.loss

    def poisoned(self, outputs, targets, padded_shape):  # type: ignore[no-untyped-def]
        return {"sem/ce": original(self, outputs, targets, padded_shape)["sem/ce"] * float("nan")}

    monkeypatch.setattr(semantic.SemanticFPNHead, "loss", poisoned)
    cfg = resume_cfg(
        shapes_paths,
        tmp_path,
        "data.num_workers=0",
        "train.nan_policy=skip",
        "train.max_nan_skips=100",
    )
    with pytest.warns(UserWarning, match="skipped step"):
        train(cfg, tmp_path)
    initial = load_config(tmp_path / "config.yaml")
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["nan_guard"]["skipped"] == 6
    from visionmtl.models import build_model
    from visionmtl.structures import ClassSpec

    torch.manual_seed(initial.train.seed)
    classes = ClassSpec.from_dict(state["classes"])
    fresh = build_model(initial.model, classes).state_dict()
    bn_keys = [k for k in fresh if k.endswith("running_mean")]
    assert bn_keys and all(torch.equal(fresh[k], state["model"][k]) for k in bn_keys)
    cfg = resume_cfg(
        shapes_paths,
        tmp_path / "limit",
        "data.num_workers=0",
        "train.nan_policy=skip",
        "train.max_nan_skips=2",
    )
    with pytest.raises(TrainingError, match="max_nan_skips"), pytest.warns(UserWarning):
        train(cfg, tmp_path / "limit")


@pytest.mark.parametrize(
    ("method", "frozen"),
    [(m, False) for m in ("pcgrad", "cagrad", "gradnorm", "uncertainty", "dwa", "famo")]
    + [("fixed", True)],  # DDP with frozen BatchNorm and stages (no gradient, no SyncBN on CPU)
)
def test_torchrun_two_processes_stay_in_sync(
    shapes_paths: dict, tmp_path: Path, resnet18_weights: Path, method: str, frozen: bool
) -> None:
    """Also: with an earlier run in the output directory, the ranks agree on the next one."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "config.yaml").write_text("")
    overrides = tiny_train_overrides(shapes_paths, tmp_path / "exp") + [
        "data.val_ann=",
        "data.num_workers=0",
        "data.batch_size=4",
        f"train.epochs={2 if method == 'dwa' else 1}",  # DWA: two epochs of synced loss history
        "train.device=cpu",
        "train.threads=1",
        f"mtl.method={method}",  # several backward passes per step; gradnorm syncs its weights
        "mtl.log_every=1",
        *([f"model.backbone.weights={resnet18_weights}"] if frozen else []),
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tools" / "train.py"),
        str(REPO / "configs" / "shapes_demo.yaml"),
        "--set",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "all 2 ranks hold identical weights" in done.stdout
    assert ("BatchNorm frozen, levels 1-2 frozen" in done.stdout) == frozen
    assert done.stdout.count("run directory: ") == 1  # rank 0 prints
    assert (tmp_path / "exp2" / "last.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "exp2"]


def test_resume_with_head_lr_and_learned_weights(shapes_paths: dict, tmp_path: Path) -> None:
    """train.head_lr adds named optimizer groups (before the uncertainty balancer's); resume with
    the same config restores them, one with other head_lr groups is refused by name."""
    from visionmtl.engine.checkpoint import CheckpointError

    extra = ("train.head_lr={sem: 2.0}", "mtl.method=uncertainty")
    cfg = resume_cfg(shapes_paths, tmp_path / "run", *extra)
    assert train(cfg, tmp_path / "run", stop_after_steps=2)["interrupted"]
    _, state = load_checkpoint(tmp_path / "run" / "last.pt")
    names = [g["name"] for g in state["optimizer"]["param_groups"]]
    assert names == ["decay", "no_decay", "head:sem/decay", "head:sem/no_decay", "balancer"]
    lrs = [g["lr"] for g in state["optimizer"]["param_groups"]]
    assert lrs[2] == pytest.approx(2 * lrs[0])
    other = resume_cfg(shapes_paths, tmp_path / "run", "mtl.method=uncertainty")
    with pytest.raises(CheckpointError, match="head_lr"):
        train(other, tmp_path / "run", resume=True)
    train(cfg, tmp_path / "run", resume=True)
    _, state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 6  # 2 epochs of 3 steps: the resumed run went to the end
