"""CSV import and export of contacts: the format, without I/O.

Import: a header row names the columns (case-insensitive): ``name``, ``phone``/``phones``,
``email``/``emails``, ``owner_id``, ``tags``, ``company_id`` and ``custom.<key>``. Several phones,
emails or tags in one cell are separated by ``;`` or ``,``. Other columns are ignored.
The gateway streams the body and hands records over in batches (``split_records``), so a file of
any length is never held in memory at once.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from services.contacts.model import normalize_identities
from shared.normalize import clean_text

COLUMN_ALIASES = {
    "name": "name",
    "fio": "name",
    "full_name": "name",
    "phone": "phones",
    "phones": "phones",
    "tel": "phones",
    "email": "emails",
    "emails": "emails",
    "mail": "emails",
    "owner_id": "owner_id",
    "tags": "tags",
    "company_id": "company_id",
}
EXPORT_COLUMNS = (
    "id",
    "name",
    "phones",
    "emails",
    "company_id",
    "owner_id",
    "tags",
    "source_kind",
    "source_channel_id",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "created_at",
)
_SPLIT = re.compile(r"[;,]")
_FORMULA = ("=", "@", "\t", "\r")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


@dataclass
class Row:
    """One parsed row: what it says, ready for deduplication."""

    line: int
    name: str | None
    phones: list[str]
    emails: list[str]
    owner_id: str | None
    tags: list[str]
    company_id: str | None
    custom: dict[str, Any] = field(default_factory=dict)


class RowError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_header(text: str) -> list[str]:
    """Column names of the header record (canonical names; unknown ones as ``""``)."""
    cells = next(csv.reader(io.StringIO(text)), [])
    out: list[str] = []
    for cell in cells:
        name = cell.strip().lstrip("\ufeff").strip().lower()
        if name.startswith("custom."):
            out.append("custom." + name[len("custom.") :])
        else:
            out.append(COLUMN_ALIASES.get(name, ""))
    return out


def header_problem(columns: list[str]) -> str | None:
    if not any(c in ("name", "phones", "emails") for c in columns):
        return "the header must name at least one of the columns name, phone, email"
    return None


def _cells(value: str) -> list[str]:
    return [v.strip() for v in _SPLIT.split(value or "") if v.strip()]


def parse_row(columns: list[str], line: int, text: str, region: str) -> Row | None:
    """A record to a :class:`Row` (``None`` for a row of empty cells); raises :class:`RowError`
    with the reason when it is unusable."""
    try:
        cells = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as exc:
        raise RowError(f"malformed CSV: {exc}") from exc
    if not any(c.strip() for c in cells):
        return None
    if len(cells) > len(columns):
        raise RowError(f"{len(cells)} cells but the header has {len(columns)} columns")
    values: dict[str, str] = {}
    for col, cell in zip(columns, cells, strict=False):
        if col:
            values[col] = cell
    phones, emails, errors = normalize_identities(
        _cells(values.get("phones", "")), _cells(values.get("emails", "")), region
    )
    if errors:
        first = sorted(errors)[0]
        what = "phone" if first.startswith("phones") else "email"
        raise RowError(f"{what}: {errors[first]}")
    name = clean_text(values.get("name"), 300) or None
    if not (name or phones or emails):
        raise RowError("a name, a phone or an email is required")
    custom = {k[len("custom.") :]: v for k, v in values.items() if k.startswith("custom.") and v.strip()}
    return Row(
        line=line,
        name=name,
        phones=phones,
        emails=emails,
        owner_id=(values.get("owner_id") or "").strip() or None,
        tags=[clean_text(t, 100) or "" for t in _cells(values.get("tags", ""))],
        company_id=(values.get("company_id") or "").strip() or None,
        custom=custom,
    )


def _pick_decoder(head: bytes) -> codecs.IncrementalDecoder:
    """UTF-8 (BOM or not) when the first bytes are UTF-8 (a character cut at the end is fine),
    else Windows-1251, the usual encoding of Russian spreadsheets."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        name = "utf-8-sig"
    except UnicodeDecodeError:
        name = "cp1251"
    return codecs.getincrementaldecoder(name)(errors="replace")


async def split_records(
    chunks: AsyncIterator[bytes], encoding: str | None = None, sniff_bytes: int = 4096
) -> AsyncIterator[tuple[int, str]]:
    """``(first line number, record text)`` for each CSV record of a byte stream, in order.

    A record ends at a line break outside quotes, so quoted cells may hold line breaks. The text
    is decoded incrementally (``encoding``, else sniffed from the first ``sniff_bytes``: UTF-8 with
    or without BOM, else Windows-1251). Blank lines are skipped. Only one record and one chunk
    are held at a time.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace") if encoding else None
    head = b""
    pending = ""
    record = ""
    start = 1
    line_no = 0
    quotes = 0

    def feed(text: str, final: bool) -> Iterator[tuple[int, str]]:
        nonlocal pending, record, start, line_no, quotes
        parts = _LINE.findall(pending + text)
        pending = ""
        if parts and not final and not parts[-1].endswith(("\n", "\r")):
            pending = parts.pop()
        elif parts and not final and parts[-1].endswith("\r"):
            pending = parts.pop()  # a CR may be the first half of CRLF
        for ln in parts:
            line_no += 1
            if not record:
                start = line_no
            record += ln
            quotes += ln.count('"')
            if quotes % 2 == 0:
                if record.strip():
                    yield start, record
                record, quotes = "", 0
        if final and record.strip():
            yield start, record

    async for chunk in chunks:
        if not chunk:
            continue
        if decoder is None:
            head += chunk
            if len(head) < sniff_bytes:
                continue
            decoder = _pick_decoder(head)
            chunk, head = head, b""
        for rec in feed(decoder.decode(chunk), final=False):
            yield rec
    if decoder is None:
        decoder = _pick_decoder(head)
    for rec in feed(decoder.decode(head, final=True), final=True):
        yield rec


def safe_cell(value: Any) -> str:
    """A cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA) or (text.startswith(("+", "-")) and not re.fullmatch(r"[+\-\d ;]+", text)):
        return "'" + text
    return text


def export_header(custom_keys: list[str]) -> list[str]:
    return [*EXPORT_COLUMNS, *(f"custom.{k}" for k in custom_keys)]


def export_row(contact: dict[str, Any], custom_keys: list[str]) -> list[str]:
    """One contact (its API view) as CSV cells in the order of :func:`export_header`."""
    source = contact.get("source") or {}
    base: list[Any] = [
        contact["id"],
        contact.get("name"),
        ";".join(contact.get("phones") or []),
        ";".join(contact.get("emails") or []),
        contact.get("company_id"),
        contact.get("owner_id"),
        ";".join(contact.get("tags") or []),
        source.get("kind"),
        source.get("channel_id"),
        *(source.get(k) for k in ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")),
        contact.get("created_at"),
    ]
    custom = contact.get("custom") or {}
    for key in custom_keys:
        value = custom.get(key)
        base.append(";".join(map(str, value)) if isinstance(value, list) else value)
    return [safe_cell(v) for v in base]


def to_csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()
