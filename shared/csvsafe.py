"""Every CSV the hub writes goes through here: cells a spreadsheet would run as a formula
(``=HYPERLINK(...)``, ``+cmd|...``, ``@SUM(...)``, a leading tab or line break) get a leading ``'``,
so they show as text. Plain numbers, negative ones and phone numbers (``+7 917 ...``) stay as they are.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_NUMBER = re.compile(r"(?=.*\d)[+\-\d .,;]+")


def safe_cell(value: Any) -> str:
    """The text of a cell that a spreadsheet will not evaluate."""
    text = "" if value is None else str(value)
    stripped = text.lstrip(" \u00a0")
    if stripped.startswith(FORMULA_START) and not _NUMBER.fullmatch(stripped):
        return "'" + text
    return text


def csv_line(cells: Sequence[Any]) -> str:
    """One CSV record (CRLF-terminated) of escaped cells."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([safe_cell(c) for c in cells])
    return buf.getvalue()


def csv_table(rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str] | None = None) -> str:
    """A header (the first row's keys, or ``fieldnames``) and one record per row, all escaped."""
    items = list(rows)
    names = list(fieldnames) if fieldnames is not None else (list(items[0].keys()) if items else [])
    if not names:
        return ""
    return csv_line(names) + "".join(csv_line([row.get(n) for n in names]) for row in items)
