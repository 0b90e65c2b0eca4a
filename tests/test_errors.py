"""Tests for visionmtl/errors.py and the command-line error contract in visionmtl/cli.py."""

import pytest

from visionmtl.api.io import InputError
from visionmtl.cli import run_tool
from visionmtl.config import ConfigError
from visionmtl.data import DataError
from visionmtl.engine.checkpoint import CheckpointError
from visionmtl.errors import OutputExistsError, TrainingError, VisionMTLError
from visionmtl.models import BackboneError


@pytest.mark.parametrize(
    "error_type",
    [
        ConfigError,
        DataError,
        CheckpointError,
        TrainingError,
        BackboneError,
        InputError,
        OutputExistsError,
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    error_type: type[Exception], capsys: pytest.CaptureFixture
) -> None:
    assert issubclass(error_type, VisionMTLError)

    def fail() -> None:
        raise error_type("data/x.json: annotation 3: bad box")

    assert run_tool(fail) == 2
    assert capsys.readouterr().err == "error: data/x.json: annotation 3: bad box\n"


def test_a_bug_is_not_hidden_as_a_user_error() -> None:
    def bug() -> None:
        raise ValueError("internal")

    with pytest.raises(ValueError, match="internal"):
        run_tool(bug)
