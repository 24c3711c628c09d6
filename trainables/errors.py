"""The small exception family of sersweep.

Every error a user can cause by what they wrote or pointed at derives from SersweepError, and its
message alone (no traceback) tells them what to fix: the file, key or path, and what was expected.
`sweep.py` prints such errors as one message and exits with code 2.
"""

from __future__ import annotations


class SersweepError(Exception):
    """Base of every user-facing error."""


class ConfigError(SersweepError):
    """A configuration value is wrong. `key` is the dotted path (e.g. `model.layers`)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{message} at {key}" if key else message)

    def __reduce__(self) -> tuple:  # Ray copies errors from workers: keep the real message
        return (type(self), (self.key, self.message))


class DataError(SersweepError):
    """A corpus, manifest or audio file is missing or malformed. `path` names it."""

    def __init__(self, path: object, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")

    def __reduce__(self) -> tuple:  # Ray copies errors from workers: keep the real message
        return (type(self), (self.path, self.message))


class DoesNotFitError(SersweepError):
    """A configuration whose batch of 1 does not fit the memory budget."""


class TrainingError(SersweepError):
    """Training cannot go on (e.g. a non-finite loss); the trial is recorded as failed."""
