"""The one base class of user errors.

An :class:`AsdError` is something the user can fix: a bad ``--set`` value, a missing index, an
unreadable clip, an unknown run id. The CLI prints its message on one line and exits with status 2;
any other exception is a bug in ``asd`` and keeps its traceback. Each error's message says what is
wrong, where (the file, key or run), and what to do.
"""

from __future__ import annotations


class AsdError(Exception):
    """A user error: printed as one line by the CLI (exit status 2), never with a traceback."""


class RunError(AsdError):
    """An MLflow run that does not exist, is of the wrong kind, or lacks an artifact it needs."""


class CheckpointError(AsdError):
    """A checkpoint file that is missing, empty, not written by ``asd`` (or the format expected), or refused."""


class TrainingError(AsdError):
    """Training cannot go on: e.g. the loss became NaN or infinite."""
