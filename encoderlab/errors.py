"""User-facing errors: every message names the file, row, field or key at fault."""

from __future__ import annotations


class EncoderlabError(Exception):
    """An error caused by the user's input or config, printed without a traceback by the CLI."""


class ConfigError(EncoderlabError):
    """A wrong key, type or value in an experiment file or override."""


class DataError(EncoderlabError):
    """Malformed input data: missing column, empty text, unseen label, bad encoding, empty file."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None):
        where = ", ".join(p for p in (
            f"file {file}" if file else "",
            f"row {row}" if row is not None else "",
            f"field '{field}'" if field else "",
        ) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.row, self.field = file, row, field


class StoreError(EncoderlabError):
    """A run that does not exist, is ambiguous, or cannot be resumed."""
