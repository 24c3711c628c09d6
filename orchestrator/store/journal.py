"""The sweep's Optuna study as a file: results/<sweep>/optuna.journal (Optuna's JournalStorage),
which `optuna-dashboard results/<sweep>/optuna.journal` shows while the sweep runs.

The Parquet store stays the source of truth for resume. Every run rebuilds the journal from the
study rebuilt from the store (search.study_with_history): copied into a temporary file, renamed
over the old one, then the run's new trials are appended as Optuna asks and is told. So the
journal never holds a trial twice, nor a trial a killed or interrupted run left unfinished (it
has no row; the old journal may show it RUNNING until the next run replaces the file, and a
dashboard left open across runs must be restarted to read the new file).
Object-store results (s3://...) get no journal: Optuna's journal backend appends to a local file.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

JOURNAL_FILE = "optuna.journal"


def journal_path(sweep_dir: str) -> Path | None:
    """results/<sweep>/optuna.journal; None for object-store results."""
    return None if "://" in sweep_dir else Path(sweep_dir) / JOURNAL_FILE


def open_journal(path: str | Path) -> optuna.storages.JournalStorage:
    """The JournalStorage of the journal file `path` (what optuna-dashboard opens too)."""
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def journal_storage(
    sweep_dir: str, study_name: str, history: optuna.storages.BaseStorage
) -> optuna.storages.BaseStorage:
    """The study `study_name` of `history` (the study rebuilt from the store) copied into a fresh
    results/<sweep>/optuna.journal, opened for the sweep to append to; `history` itself for
    object-store results."""
    path = journal_path(sweep_dir)
    if path is None:
        return history
    temporary = path.with_name(f".{JOURNAL_FILE}.tmp")
    temporary.unlink(missing_ok=True)  # left by a run killed while copying
    optuna.copy_study(from_study_name=study_name, from_storage=history,
                      to_storage=open_journal(temporary))
    os.replace(temporary, path)  # a reader sees the old journal or the whole new one
    return open_journal(path)
