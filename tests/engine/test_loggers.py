"""The run's loggers: metrics.jsonl, results.csv, TensorBoard scalars and train.log."""

import csv
import json
from pathlib import Path

import pytest

from visionmtl.engine.loggers import RunLogger, append_csv_row, copy_prints, epoch_line


def _step(step: int) -> dict:
    return {"step": step, "lr": 0.001, "loss/det": 1.0 / (step + 1), "grad_cos/det|sem": -0.5}


def _epoch(epoch: int, step: int) -> dict:
    return {"epoch": epoch, "step": step, "lr": 0.001, "epoch_seconds": 2.5, "loss/det": 0.7}


def _jsonl(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def _csv(directory: Path) -> tuple[list[str], list[dict]]:
    with open(directory / "results.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_csv_has_one_row_per_epoch_under_the_jsonl_keys(tmp_path: Path) -> None:
    """Validation from epoch 2 on (eval_every 2): its columns join the table then."""
    with RunLogger(tmp_path, ["jsonl", "csv"], start_step=0) as logger:
        logger.log_step(_step(0))
        logger.log_epoch(_epoch(1, 3), {})
        logger.log_step(_step(3))
        logger.log_epoch(_epoch(2, 6), {"bbox_AP": 0.25, "eval_precision": "fp32"})
    epochs = [r for r in _jsonl(tmp_path) if "epoch" in r]
    assert len(_jsonl(tmp_path)) == 4 and len(epochs) == 2
    header, rows = _csv(tmp_path)
    assert header == list(dict.fromkeys(key for record in epochs for key in record))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0]["bbox_AP"] == "" and float(rows[1]["bbox_AP"]) == 0.25
    assert rows[1]["eval_precision"] == "fp32"


def test_a_resumed_run_appends_and_a_fresh_one_starts_over(tmp_path: Path) -> None:
    with RunLogger(tmp_path, ["jsonl", "csv"], start_step=0) as logger:
        logger.log_epoch(_epoch(1, 3), {})
    with RunLogger(tmp_path, ["jsonl", "csv"], start_step=3) as logger:
        logger.log_epoch(_epoch(2, 6), {})
    assert [r["epoch"] for r in _jsonl(tmp_path)] == [1, 2]
    assert [row["epoch"] for row in _csv(tmp_path)[1]] == ["1", "2"]
    with RunLogger(tmp_path, ["jsonl", "csv"], start_step=0) as logger:
        logger.log_epoch(_epoch(1, 3), {})
    assert [r["epoch"] for r in _jsonl(tmp_path)] == [1]
    assert [row["epoch"] for row in _csv(tmp_path)[1]] == ["1"]


def test_only_the_chosen_loggers_write(tmp_path: Path) -> None:
    with RunLogger(tmp_path, ["csv"], start_step=0) as logger:
        logger.log_step(_step(0))
        logger.log_epoch(_epoch(1, 3), {})
    assert not (tmp_path / "metrics.jsonl").exists()
    assert [row["epoch"] for row in _csv(tmp_path)[1]] == ["1"]


def test_csv_rows_keep_their_values_when_columns_are_added(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    append_csv_row(path, {"a": 1, "b": 2.5})
    append_csv_row(path, {"a": 2, "c": "x"})
    append_csv_row(path, {"b": 3})
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["a", "b", "c"], ["1", "2.5", ""], ["2", "", "x"], ["", "3", ""]]
    assert not (tmp_path / "table.csv.tmp").exists()


def _scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    ).EventAccumulator(str(directory))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_tensorboard_scalars_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    with RunLogger(tmp_path, ["tensorboard"], start_step=0) as logger:
        for step in range(3):
            logger.log_step(_step(step))
        logger.log_epoch(_epoch(1, 3), {"bbox_AP": 0.25, "eval_precision": "fp32"})
    scalars = _scalars(tmp_path)
    assert [step for step, _ in scalars["loss/det"]] == [0, 1, 2]
    assert scalars["loss/det"][1][1] == pytest.approx(0.5)
    assert [step for step, _ in scalars["grad_cos/det-sem"]] == [0, 1, 2]
    assert scalars["val/bbox_AP"] == [(3, 0.25)]
    assert scalars["epoch/loss/det"] == [(3, pytest.approx(0.7))]
    assert {"epoch/lr", "epoch/epoch_seconds", "lr"} <= set(scalars)
    assert not {"epoch/epoch", "epoch/step", "val/eval_precision"} & set(scalars)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_tensorboard_of_a_resumed_run_hides_what_the_interrupted_one_wrote_after_it(
    tmp_path: Path,
) -> None:
    """Interrupted after step 3, resumed from the last.pt of step 2: the old steps 2 and 3 go,
    also of tags the resumed run has not written again yet."""
    pytest.importorskip("tensorboard")
    with RunLogger(tmp_path, ["tensorboard"], start_step=0) as logger:
        for step in range(4):
            logger.log_step(_step(step))
    with RunLogger(tmp_path, ["tensorboard"], start_step=2) as logger:
        logger.log_step({"step": 2, "lr": 0.002})
    scalars = _scalars(tmp_path)
    assert [step for step, _ in scalars["loss/det"]] == [0, 1]
    assert [step for step, _ in scalars["lr"]] == [0, 1, 2]
    assert scalars["lr"][-1][1] == pytest.approx(0.002)


def test_copy_prints_writes_and_appends(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = tmp_path / "train.log"
    with copy_prints(log, append=False):
        print("first run")
    with copy_prints(log, append=True):
        print("resumed")
    print("after")
    assert log.read_text() == "first run\nresumed\n"
    assert capsys.readouterr().out == "first run\nresumed\nafter\n"
    with copy_prints(log, append=False):
        print("fresh")
    assert log.read_text() == "fresh\n"


def test_epoch_line_names_task_losses_and_main_metrics() -> None:
    record = {**_epoch(2, 6), "loss/det/cls": 0.3, "loss/sem": 0.25}
    line = epoch_line(record, {"bbox_AP": 0.3121, "bbox_AP50": 0.5, "mIoU": 0.7}, epochs=12)
    assert line == "epoch 2/12: loss det 0.7000 sem 0.2500; bbox_AP 0.3121 mIoU 0.7000; 2.5 s"


def test_a_training_logs_losses_task_signals_and_metrics_to_tensorboard(
    shapes_paths: dict, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    from tests.conftest import tiny_train_overrides
    from visionmtl.config import load_config
    from visionmtl.engine.trainer import train

    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        "train.epochs=1",
        "mtl.log_every=1",
        "train.loggers=[tensorboard]",
    ]
    train(load_config(None, overrides), tmp_path)  # 24 images, batches of 8: steps 0, 1, 2
    scalars = _scalars(tmp_path)
    for task in ("det", "sem", "inst"):
        for signal in ("loss", "weight", "grad_norm"):
            assert [step for step, _ in scalars[f"{signal}/{task}"]] == [0, 1, 2]
        assert [step for step, _ in scalars[f"epoch/loss/{task}"]] == [3]
    assert [step for step, _ in scalars["grad_cos/det-sem"]] == [0, 1, 2]
    assert [step for step, _ in scalars["lr"]] == [0, 1, 2]
    assert {"val/bbox_AP", "val/segm_AP", "val/mIoU"} <= set(scalars)
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "results.csv").exists()


def test_resume_without_a_checkpoint_keeps_the_earlier_logs(
    shapes_paths: dict, tmp_path: Path
) -> None:
    """--resume in a directory whose run died before its first last.pt starts from step 0, and
    must not delete what that run logged."""
    from tests.conftest import tiny_train_overrides
    from visionmtl.config import load_config
    from visionmtl.engine.trainer import train

    earlier = json.dumps({"epoch": 0, "note": "an earlier run"})
    (tmp_path / "metrics.jsonl").write_text(earlier + "\n")
    overrides = tiny_train_overrides(shapes_paths, tmp_path) + ["train.epochs=1"]
    train(load_config(None, overrides), tmp_path, resume=True, stop_after_steps=1)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines()[0] == earlier
    with RunLogger(tmp_path, ["jsonl"], start_step=0, fresh=True):
        pass  # a fresh run (--exist-ok) does start the files over
    assert not (tmp_path / "metrics.jsonl").exists()


def _interrupted_run(directory: Path, names: list[str]) -> None:
    """Epoch 1 ends at step 3 (last.pt), then steps 3..4 and epoch 2 at step 6 before the kill
    (whose last.pt write did not happen)."""
    with RunLogger(directory, names, start_step=0) as logger:
        for step in range(3):
            logger.log_step(_step(step))
        logger.log_epoch(_epoch(1, 3), {"bbox_AP": 0.25})
        for step in range(3, 5):
            logger.log_step(_step(step))
        logger.log_epoch(_epoch(2, 6), {"bbox_AP": 0.5})


def test_a_resumed_run_drops_the_records_written_after_its_checkpoint(tmp_path: Path) -> None:
    _interrupted_run(tmp_path, ["jsonl", "csv"])
    with RunLogger(tmp_path, ["jsonl", "csv"], start_step=3, fresh=False) as logger:
        logger.log_step(_step(3))
    records = _jsonl(tmp_path)
    assert [(r.get("epoch"), r["step"]) for r in records] == [
        (None, 0), (None, 1), (None, 2), (1, 3), (None, 3)
    ]  # fmt: skip
    columns, rows = _csv(tmp_path)
    assert [row["epoch"] for row in rows] == ["1"] and "bbox_AP" in columns


def test_tensorboard_of_a_resumed_run_keeps_the_epoch_boundary_points(tmp_path: Path) -> None:
    """The purge from step 3 on would hide epoch 1's points at step 3: they are written again."""
    pytest.importorskip("tensorboard")
    _interrupted_run(tmp_path, ["jsonl", "tensorboard"])
    with RunLogger(tmp_path, ["jsonl", "tensorboard"], start_step=3, fresh=False) as logger:
        logger.log_step(_step(3))
    scalars = _scalars(tmp_path)
    assert scalars["val/bbox_AP"] == [(3, pytest.approx(0.25))]
    assert [step for step, _ in scalars["epoch/loss/det"]] == [3]
    assert [step for step, _ in scalars["loss/det"]] == [0, 1, 2, 3]
