"""Read csv / tsv / jsonl / parquet files into DataFrames, turning every failure into a DataError
that names the file and, where one is at fault, the row (1-based, header not counted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from encoderlab.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffixes = [s for s in path.suffixes if s not in (".gz", ".bz2", ".xz", ".zst")]
    if suffixes and suffixes[-1].lower() in FORMATS:
        return FORMATS[suffixes[-1].lower()]
    raise DataError(f"cannot tell the format from the extension '{''.join(path.suffixes)}'; "
                    f"use one of {', '.join(sorted(FORMATS))} or set data.format", file=str(path))


def read_table(path: str | Path, fmt: str = "auto") -> pd.DataFrame:
    """Read a whole file as strings-or-numbers; never returns an empty frame."""
    path = Path(path)
    if not path.exists():
        raise DataError("file does not exist", file=str(path))
    if path.is_dir():
        raise DataError("is a folder, expected a data file", file=str(path))
    fmt = detect_format(path, fmt)
    if path.stat().st_size == 0:
        raise DataError("file is empty", file=str(path))
    try:
        if fmt == "jsonl":
            df = _read_jsonl(path)
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            df = _read_delimited(path, "," if fmt == "csv" else "\t")
    except UnicodeDecodeError as e:
        line, col, reason = _first_bad_utf8(path) or (None, e.start, e.reason)
        row = line if line is None or fmt == "jsonl" else (line - 1 or None)  # csv/tsv: header = line 1
        where = " in the header" if line == 1 and fmt != "jsonl" else ""
        raise DataError(f"not UTF-8 text{where} (byte {col} of the line: {reason}); re-save it as UTF-8",
                        file=str(path), row=row) from None
    except DataError:
        raise
    except Exception as e:  # pyarrow / parser errors: keep the message, drop the deep traceback
        raise DataError(f"cannot read as {fmt}: {e}", file=str(path)) from None
    if len(df) == 0:
        raise DataError("file has a header but no rows", file=str(path))
    return df.reset_index(drop=True)


def _read_delimited(path: Path, sep: str) -> pd.DataFrame:
    try:
        # dtype=str keeps labels like "01" intact and ids from turning into floats
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8",
                           compression="infer", quoting=3 if sep == "\t" else 0)
    except pd.errors.ParserError as e:
        # pandas says "Error tokenizing data. C error: Expected 2 fields in line 7, saw 3"; line 7 of
        # the file is data row 6 (the header is line 1)
        msg = str(e).strip().replace("Error tokenizing data. C error: ", "")
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m:
            raise DataError(f"malformed row: expected {m[1]} fields, saw {m[3]}",
                            file=str(path), row=int(m[2]) - 1) from None
        raise DataError(f"malformed row: {msg}", file=str(path)) from None
    except pd.errors.EmptyDataError:
        raise DataError("file is empty", file=str(path)) from None


def _first_bad_utf8(path: Path) -> tuple[int, int, str] | None:
    """(1-based line, byte within the line, reason) of the first bytes that are not UTF-8."""
    import bz2
    import gzip
    import lzma
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rb") as fh:
        for i, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return i, e.start, e.reason
    return None


def _read_jsonl(path: Path) -> pd.DataFrame:
    import gzip
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=str(path), row=i) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object per line, got {type(obj).__name__}",
                                file=str(path), row=i)
            rows.append(obj)
    if not rows:
        raise DataError("file has no JSON rows", file=str(path))
    return pd.DataFrame(rows)
