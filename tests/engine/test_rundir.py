"""Run directories: a fresh training never writes over an earlier run."""

from pathlib import Path

import pytest

from visionmtl.engine.rundir import CLAIM_FILE, RUN_FILES, choose_run_dir


def _earlier_run(directory: Path, marker: str = "config.yaml") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / marker).write_text("")


@pytest.mark.parametrize("marker", RUN_FILES)
def test_a_directory_holding_a_run_gives_the_next_free_name(tmp_path: Path, marker: str) -> None:
    exp = tmp_path / "runs" / "exp"
    _earlier_run(exp, marker)
    assert choose_run_dir(exp, exist_ok=False, resume=False) == tmp_path / "runs" / "exp2"
    _earlier_run(tmp_path / "runs" / "exp2")
    unrelated = tmp_path / "runs" / "exp3"  # a folder without a run's files is free
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("")
    assert choose_run_dir(exp, exist_ok=False, resume=False) == unrelated


def test_two_trainings_started_at_once_take_two_directories(tmp_path: Path) -> None:
    """The first claims runs/exp before writing anything else; the second goes to exp2."""
    exp = tmp_path / "runs" / "exp"
    exp.mkdir(parents=True)  # an empty folder is free
    assert choose_run_dir(exp, exist_ok=False, resume=False) == exp
    assert (exp / CLAIM_FILE).is_file() and not (exp / "config.yaml").exists()
    assert choose_run_dir(exp, exist_ok=False, resume=False) == tmp_path / "runs" / "exp2"
    assert choose_run_dir(exp, exist_ok=False, resume=False) == tmp_path / "runs" / "exp3"


def test_exist_ok_and_resume_keep_the_directory(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    _earlier_run(exp, "last.pt")
    assert choose_run_dir(exp, exist_ok=True, resume=False) == exp
    assert choose_run_dir(exp, exist_ok=False, resume=True) == exp
    assert not (tmp_path / "exp2").exists()


def test_the_current_directory_is_numbered_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _earlier_run(tmp_path / "exp")
    monkeypatch.chdir(tmp_path / "exp")
    assert choose_run_dir(Path("."), exist_ok=False, resume=False) == tmp_path.resolve() / "exp2"


def test_a_run_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    """A TrainingError naming the path (the CLI's exit code 2), also sent to the other ranks."""
    from visionmtl.engine.distributed import DistInfo
    from visionmtl.engine.rundir import agree_on_run_dir
    from visionmtl.errors import TrainingError

    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    with pytest.raises(TrainingError, match=r"runs/exp: cannot create the run directory"):
        agree_on_run_dir(blocker / "exp", exist_ok=False, resume=False, dist_info=DistInfo())
