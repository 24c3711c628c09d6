"""Fixtures of the reliability tests (drivers.py holds the driver-process lifecycle)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One featurized-corpus cache for every sweep of the session (keyed by the data config)."""
    return tmp_path_factory.mktemp("sersweep-cache")
