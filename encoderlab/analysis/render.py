"""The one table model and renderer: row dicts as a terminal table (rich), Markdown, CSV or JSON
(and HTML for the report).

Every table the CLI, the report and the benchmarks print goes through here: either a `Table`
(rows, column specs, title and notes) or bare rows plus a column spec.

A column spec is a list of ``(key, header)`` or ``(key, header, fmt)``; ``fmt`` is the number of
decimals for floats (default 4, or the per-key default in ``DIGITS``) or ``"g"`` for config values
such as learning rates. A bare string ``key`` means ``(key, key)``.

Human formats (table, markdown) show every float with the same number of decimals (a non-zero
value too small for them switches to significant digits, so ``1e-05`` never shows as ``0.0000``)
and missing values as ``-``. Machine formats keep full precision: CSV writes ``repr`` of floats
(reading it back gives the same float) and an empty cell for missing values, JSON writes numbers
and ``null``. Column keys, not headers, name the fields in CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

FORMATS = ("table", "markdown", "csv", "json")
DIGITS = {"epoch": 2, "best_epoch": 2, "elapsed": 1, "seconds": 1, "tokens_per_s": 0}
MISSING = "-"

Column = tuple  # (key, header) or (key, header, fmt)


def columns_of(columns: Iterable[Any]) -> list[tuple[str, str, Any]]:
    """Normalise a column spec to (key, header, fmt) triples."""
    out = []
    for c in columns:
        if isinstance(c, str):
            out.append((c, c, None))
        elif len(c) == 2:
            out.append((c[0], c[1], None))
        else:
            out.append((c[0], c[1], c[2]))
    return out


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def format_value(v: Any, fmt: Any = None, key: str = "") -> str:
    """One cell for humans: floats with fixed decimals, ints as is, missing as '-'."""
    if _missing(v):
        return MISSING
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if fmt == "g":
            return f"{v:g}"
        digits = fmt if isinstance(fmt, int) else DIGITS.get(key, 4)
        if v != 0 and abs(v) < 0.5 * 10.0 ** -digits:
            return f"{v:.{max(digits, 1)}g}"
        return f"{v:.{digits}f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(x, fmt, key) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_NUMBER_TEXT = re.compile(rf"^(?:{_NUM}(?:\s*±\s*{_NUM})?(?:\s*\(.*\))?|[-+]?inf|nan)$")


def _numeric(rows: Sequence[dict], key: str) -> bool:
    """Right-align: every present value is a number or a text starting like one ('0.81 ± 0.01')."""
    vals = [r.get(key) for r in rows if r.get(key) is not None]
    return bool(vals) and all(
        (isinstance(v, (int, float)) and not isinstance(v, bool)) or (isinstance(v, str) and _NUMBER_TEXT.match(v))
        for v in vals)


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):   # numpy scalars
        return _json_value(v.item())
    return v


def _csv_value(v: Any) -> str:
    if _missing(v):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return ";".join(_csv_value(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(_json_value(v), sort_keys=True)
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return _csv_value(v.item())
    return str(v)


def md_escape(text: str) -> str:
    """A Markdown table cell: pipes escaped, line breaks as spaces."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def to_markdown(rows: Sequence[dict], columns: Iterable[Any], title: str = "") -> str:
    cols = columns_of(columns)
    lines = [f"**{md_escape(title)}**", ""] if title else []
    lines.append("| " + " | ".join(md_escape(h) for _, h, _ in cols) + " |")
    lines.append("|" + "|".join("---:" if _numeric(rows, k) else "---" for k, _, _ in cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(md_escape(format_value(r.get(k), f, k)) for k, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def to_html(rows: Sequence[dict], columns: Iterable[Any]) -> str:
    """An HTML <table> (cells escaped); numeric cells get class "num", a `severity` cell its value."""
    import html
    cols = columns_of(columns)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for _, h, _ in cols)
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            text = format_value(v, fmt, key)
            cls = f' class="{html.escape(str(v))}"' if key == "severity" else (' class="num"' if num else "")
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_csv(rows: Sequence[dict], columns: Iterable[Any]) -> str:
    cols = columns_of(columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([k for k, _, _ in cols])
    for r in rows:
        w.writerow([_csv_value(r.get(k)) for k, _, _ in cols])
    return buf.getvalue()


def to_json(rows: Sequence[dict], columns: Iterable[Any]) -> str:
    cols = columns_of(columns)
    return json.dumps([{k: _json_value(r.get(k)) for k, _, _ in cols} for r in rows], indent=2) + "\n"


def rich_table(rows: Sequence[dict], columns: Iterable[Any], title: str = ""):
    """A rich.table.Table; cells are plain text (no markup is interpreted)."""
    from rich.table import Table
    from rich.text import Text
    cols = columns_of(columns)
    t = Table(title=title or None, title_justify="left")
    for key, head, _ in cols:
        t.add_column(Text(head), justify="right" if _numeric(rows, key) else "left")
    for r in rows:
        t.add_row(*[Text(format_value(r.get(k), f, k)) for k, _, f in cols])
    return t


def print_table(rows: Sequence[dict], columns: Iterable[Any], title: str = "", console=None) -> None:
    """Print rows as a rich table on `console` (default: a new stdout console)."""
    if console is None:
        import sys
        from rich.console import Console
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(rich_table(rows, columns, title))


def render(rows: Sequence[dict], columns: Iterable[Any], fmt: str = "table", title: str = "",
           width: int = 160) -> str:
    """rows as text in one of FORMATS ('md' is accepted for 'markdown')."""
    fmt = {"md": "markdown"}.get(fmt, fmt)
    if fmt == "markdown":
        return to_markdown(rows, columns, title)
    if fmt == "csv":
        return to_csv(rows, columns)
    if fmt == "json":
        return to_json(rows, columns)
    if fmt == "table":
        from rich.console import Console
        buf = io.StringIO()
        Console(file=buf, width=width, highlight=False, color_system=None, force_terminal=False) \
            .print(rich_table(rows, columns, title))
        return buf.getvalue()
    raise ValueError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")


@dataclass
class Table:
    """Rows (plain dicts) and how to show them.

    ``columns`` is the human view (e.g. formatted "mean ± std" strings); ``data_columns`` the
    machine view (numeric mean / std / n fields) used for CSV and JSON when given. The notes:
    ``fixed`` (config fields equal in all rows), ``varied`` (the config keys that differ between
    rows) and ``warnings`` (sentences printed under the table)."""
    rows: list[dict]
    columns: list[tuple]
    data_columns: list[tuple] | None = None
    title: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    varied: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def render(self, fmt: str = "table", width: int = 160) -> str:
        machine = fmt in ("csv", "json") and self.data_columns
        return render(self.rows, self.data_columns if machine else self.columns, fmt, self.title, width)

    def print(self, console=None) -> None:
        print_table(self.rows, self.columns, self.title, console)


def emit(table: Table, fmt: str = "table", console=None) -> None:
    """Print a table in one of FORMATS: a rich table on `console` for people, else its Markdown
    (followed by a blank line), CSV or JSON text on stdout."""
    if fmt == "table":
        table.print(console)
        return
    import sys
    text = table.render(fmt)
    sys.stdout.write(text + ("\n" if fmt in ("markdown", "md") else ""))
