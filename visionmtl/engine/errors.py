"""Errors raised by the training engine."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, nothing to train on, ranks out of step)."""
