"""Per-rank state under a real 2-process gloo group (no torchrun: torch.multiprocessing)."""

from __future__ import annotations

import json
import os
import socket
import types
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from visionmtl.engine.checkpoint import rng_state, set_rng_state
from visionmtl.engine.distributed import DistInfo, broadcast_from_main, gather_objects
from visionmtl.engine.training_run import own_rng_state


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _resume_rng(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        info = DistInfo(rank, world_size, rank)
        torch.manual_seed(100 + rank)  # each rank's generator is in its own state
        torch.rand(rank + 1)
        states = gather_objects(rng_state(), info)
        path = Path(folder) / "last.pt"
        if info.is_main:  # what TrainingRun.save_last writes
            torch.save({"rng": states[0], "rng_per_rank": states}, path)
        dist.barrier()
        expected = torch.rand(5)  # what this rank draws next in the uninterrupted run
        state = torch.load(path, weights_only=True)
        set_rng_state(own_rng_state(state, info, path))
        torch.save(torch.equal(torch.rand(5), expected), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_every_rank_resumes_its_own_rng_state(tmp_path: Path) -> None:
    mp.spawn(_resume_rng, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)] == [True, True]


def test_a_file_from_another_world_size_falls_back_to_rank_0(tmp_path: Path) -> None:
    state = {"rng": {"r": 0}, "rng_per_rank": [{"r": 0}]}
    assert own_rng_state(state, DistInfo(1, 2, 1), tmp_path / "last.pt") == {"r": 0}
    assert own_rng_state({"rng": {"r": 0}}, DistInfo(), tmp_path / "last.pt") == {"r": 0}


def _broadcast(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        agreed = broadcast_from_main(
            Path(folder) / f"decided-by-{rank}", DistInfo(rank, world_size)
        )
        (Path(folder) / f"rank{rank}.txt").write_text(str(agreed))
    finally:
        dist.destroy_process_group()


def test_every_rank_gets_rank_0s_decision(tmp_path: Path) -> None:
    mp.spawn(_broadcast, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    texts = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert texts == [str(tmp_path / "decided-by-0")] * 2
    assert broadcast_from_main("alone", DistInfo()) == "alone"


def _sharded_validation(rank: int, world_size: int, port: int, run: str, shapes: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        from visionmtl.engine.checkpoint import load_model
        from visionmtl.engine.trainer import _validate
        from visionmtl.evaluation.validation import build_validation_sets

        model, cfg = load_model(Path(run) / "best.pt")
        progress = types.SimpleNamespace(best_score=float("inf"), epoch=0)  # never saves
        val_sets = build_validation_sets(cfg, model.classes)
        inferred: list[int] = []  # images this rank inferred, before the others' were added

        def spy_run(*args, **kwargs):  # noqa: ANN002, ANN003
            evaluations = type(val_sets).run(val_sets, *args, **kwargs)
            inferred.append(len(evaluations[0].coco.image_ids))
            return evaluations

        val_sets.run = spy_run
        state = types.SimpleNamespace(
            dist_info=DistInfo(rank, world_size),
            val_sets=val_sets,
            eval_model=model,
            cfg=cfg,
            device=torch.device("cpu"),
            output_dir=Path(run),
        )
        metrics = _validate(state, progress)
        torch.save((metrics, inferred), Path(run) / f"sharded_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_validation_is_sharded_over_ranks_and_scored_on_rank_0(
    trained_run: Path, shapes_paths: dict
) -> None:
    """Two ranks each infer half of the validation images; rank 0 scores them all and gets
    exactly the single-process metrics (box and mask AP, mIoU), the other rank None."""
    mp.spawn(
        _sharded_validation,
        args=(2, _free_port(), str(trained_run), shapes_paths),
        nprocs=2,
        join=True,
    )
    expected = json.loads(torch.load(trained_run / "best.pt", weights_only=True)["metrics"])
    (main, inferred_0), (other, inferred_1) = (
        torch.load(trained_run / f"sharded_rank{r}.pt") for r in range(2)
    )
    assert other is None
    val_images = len(json.loads(Path(shapes_paths["val_ann"]).read_text())["images"])
    assert inferred_0 == inferred_1 == [val_images // 2]
    scored = {k: v for k, v in expected.items() if k.split("_")[0] in ("bbox", "segm", "mIoU")}
    assert {"bbox_AP", "segm_AP", "mIoU"} <= set(scored)
    assert {k: main[k] for k in scored} == pytest.approx(scored, abs=1e-6)
