"""Where a search's Optuna study lives: one journal file beside the run index, so a killed search
resumes from the store and the report reads the study back."""

from __future__ import annotations

from pathlib import Path

STUDY_FILE = "search.journal"


def storage(root: str | Path):
    """The Optuna storage of the store at `root` (journal file; safe for one writer at a time)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    Path(root).mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(Path(root) / STUDY_FILE)))
