"""What a training records (rank 0): ``metrics.jsonl``, ``results.csv`` and TensorBoard scalars as
``train.loggers`` chooses, and ``train.log``, a copy of everything it prints."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from visionmtl.errors import ConfigError
from visionmtl.evaluation.report import MAIN_METRICS

METRICS_FILE = "metrics.jsonl"
CSV_FILE = "results.csv"
LOG_FILE = "train.log"
EVENTS_GLOB = "events.out.tfevents.*"  # SummaryWriter's file names


def check_loggers(names: Sequence[str]) -> None:
    """Raise a ConfigError where a chosen logger's package is missing; called on every rank before
    the process group forms, so no rank waits for one that failed."""
    if "tensorboard" in names and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.loggers has 'tensorboard' but the tensorboard package is not installed: "
            "pip install tensorboard (or visionmtl[tensorboard]), or leave it out of train.loggers"
        )


class RunLogger:
    """The run's metric records, written to each logger of ``train.loggers`` in ``output_dir``.

    Step records (every ``mtl.log_every`` steps: ``step``, ``lr``, each task's ``loss/<task>``,
    ``weight/<task>``, ``grad_norm/<task>``, ``grad_cos/<a>|<b>``) and epoch records (``epoch``,
    ``step``, ``lr``, ``epoch_seconds``, running ``loss/<name>`` and the validation metrics):

    - ``jsonl``: both kinds in ``metrics.jsonl``, one JSON object a line (epoch records have
      ``epoch``);
    - ``csv``: epoch records in ``results.csv``, one row each, as a results table; its columns are
      the keys of those records in the order first seen (:func:`append_csv_row`);
    - ``tensorboard``: the numbers of both against the global step: step records under their own
      keys (``|`` written ``-``: TensorBoard's tag characters), epoch records as ``epoch/<key>``
      and validation metrics as ``val/<key>``.

    ``fresh`` (not ``--resume``) at ``start_step`` 0: these loggers' files of an earlier run in
    ``output_dir`` (reused with ``--exist-ok``) are removed. Otherwise the run appends (a
    ``--resume`` without ``last.pt`` starts at step 0 but keeps what is there). A run resumed at
    ``start_step`` S > 0 first drops what the interrupted run wrote after its ``last.pt``, which
    the resumed run writes again: step records from step S on and epoch records after S, from
    ``metrics.jsonl`` and ``results.csv``; TensorBoard hides those events (``purge_step``) and the
    epoch record at S (an epoch boundary) is written to it again, as the purge hid it too."""

    def __init__(
        self, output_dir: Path, names: Sequence[str], start_step: int, fresh: bool = True
    ) -> None:
        self.output_dir, self.names = output_dir, set(names)
        if fresh and start_step == 0:
            for path in [output_dir / METRICS_FILE, output_dir / CSV_FILE]:
                path.unlink(missing_ok=True)
            for path in output_dir.glob(EVENTS_GLOB):
                path.unlink()
        boundary = drop_superseded(output_dir, start_step) if start_step > 0 else None
        self.writer = None
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir), purge_step=start_step or None)
            if boundary is not None:
                record = {k: v for k, v in boundary.items() if _is_epoch_key(k)}
                metrics = {k: v for k, v in boundary.items() if k not in record}
                self._add_scalars(record, "epoch/", start_step)
                self._add_scalars(metrics, "val/", start_step)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def log_step(self, record: dict[str, Any]) -> None:
        """A step record (it has ``step``)."""
        self._append_jsonl(record)
        self._add_scalars(record, "", record["step"])

    def log_epoch(self, record: dict[str, Any], metrics: dict[str, Any]) -> None:
        """An epoch record (``epoch``, ``step``, ...) and the validation ``metrics`` of that epoch
        (flat: no ``per_class``; empty where it did not validate)."""
        row = {**record, **metrics}
        self._append_jsonl(row)
        if "csv" in self.names:
            append_csv_row(self.output_dir / CSV_FILE, row)
        self._add_scalars(record, "epoch/", record["step"])
        self._add_scalars(metrics, "val/", record["step"])
        if self.writer is not None:
            self.writer.flush()  # an epoch's points visible in TensorBoard now, not in 2 minutes

    def _append_jsonl(self, record: dict[str, Any]) -> None:
        if "jsonl" in self.names:
            with open(self.output_dir / METRICS_FILE, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _add_scalars(self, values: dict[str, Any], prefix: str, step: int) -> None:
        """The numbers of ``values`` (not ``epoch``/``step``, the axes) as scalars at ``step``."""
        if self.writer is None:
            return
        for key, value in values.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and key not in ("epoch", "step"):
                self.writer.add_scalar(prefix + key.replace("|", "-"), value, step)


def _is_epoch_key(key: str) -> bool:
    """Whether a key of an epoch row (``metrics.jsonl``) is the training's record rather than a
    validation metric (see :meth:`RunLogger.log_epoch`)."""
    return key in ("epoch", "step", "lr", "epoch_seconds") or key.startswith(("loss/", "stitch/"))


def drop_superseded(output_dir: Path, start_step: int) -> dict[str, Any] | None:
    """Remove from ``metrics.jsonl`` and ``results.csv`` in ``output_dir`` the records an
    interrupted run wrote after the checkpoint a resumed run starts from (``start_step`` steps
    done): step records of step >= ``start_step``, epoch rows of step > ``start_step``. Returns
    the epoch row at ``start_step`` (None: not an epoch boundary, or no ``metrics.jsonl``)."""
    boundary = None
    jsonl = output_dir / METRICS_FILE
    if jsonl.is_file():
        kept = []
        for line in jsonl.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            step, epoch = record.get("step", 0), "epoch" in record
            if step < start_step or (epoch and step == start_step):
                kept.append(line)
                boundary = record if epoch and step == start_step else boundary
        _replace_text(jsonl, "".join(line + "\n" for line in kept))
    table = output_dir / CSV_FILE
    if table.is_file():
        with open(table, newline="") as handle:
            reader = csv.DictReader(handle)
            columns, rows = reader.fieldnames or [], list(reader)
        rows = [row for row in rows if float(row.get("step") or 0) <= start_step]
        _write_csv(table, columns, rows)
    return boundary


def _replace_text(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    os.replace(partial, path)  # never a half-written file


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)  # never a half-written table


def append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the CSV file ``path`` (header: its keys). Where it brings keys the file has
    no column for (validation metrics from the first validated epoch on, with ``eval_every``
    > 1), the file is rewritten with those columns added and empty cells in earlier rows, so every
    row stays under one header (pandas reads the empty cells as NaN)."""
    columns: list[str] = []
    if path.is_file():
        with open(path, newline="") as handle:
            columns = next(csv.reader(handle), [])
    if columns and set(row) <= set(columns):
        with open(path, "a", newline="") as handle:
            csv.DictWriter(handle, columns).writerow(row)
        return
    earlier: list[dict[str, str]] = []
    if columns:
        with open(path, newline="") as handle:
            earlier = list(csv.DictReader(handle))
    columns += [key for key in row if key not in columns]
    _write_csv(path, columns, [*earlier, row])


def epoch_line(record: dict[str, Any], metrics: dict[str, Any], epochs: int) -> str:
    """One printed line per epoch: each task's running loss, the main validation metrics, time,
    e.g. ``epoch 2/12: loss det 1.2034 sem 0.4410; bbox_AP 0.3121 mIoU 0.7005; 41.2 s``."""
    losses = {k[5:]: v for k, v in record.items() if k.startswith("loss/") and k.count("/") == 1}
    line = f"epoch {record['epoch']}/{epochs}: loss "
    line += " ".join(f"{task} {value:.4f}" for task, value in losses.items())
    main = [f"{k} {metrics[k]:.4f}" for k in MAIN_METRICS if metrics.get(k) is not None]
    if main:
        line += "; " + " ".join(main)
    return f"{line}; {record['epoch_seconds']:.1f} s"


class _Tee:
    """A text stream that writes to ``stream`` and to ``copy``; anything else is ``stream``'s."""

    def __init__(self, stream: IO[str], copy: IO[str]) -> None:
        self.stream, self.copy = stream, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.copy.flush()
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def copy_prints(path: Path, append: bool) -> Iterator[None]:
    """While the block runs, what is printed (stdout) also goes to ``path`` (``train.log``), line
    by line so it can be followed; appended to with ``append`` (a resumed run). The progress bar
    (stderr) is left out: it redraws one line."""
    with open(path, "a" if append else "w", encoding="utf-8", buffering=1) as handle:
        original = sys.stdout
        sys.stdout = _Tee(original, handle)
        try:
            yield
        finally:
            sys.stdout = original
