"""CSV import and export of contacts: the format, without I/O.

Import: a header row names the columns (case-insensitive): ``name``, ``phone``/``phones``,
``email``/``emails``, ``owner_id``, ``tags``, ``company_id`` and ``custom.<key>``. Several phones,
emails or tags in one cell are separated by ``;`` or ``,``. Other columns are ignored.
The gateway streams the body and hands records over in batches (``split_records``), so a file of
any length is never held in memory at once.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.contacts.domain.cards import normalize_identities
from shared.csvsafe import csv_line, safe_cell
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
    if text == OVERSIZED:
        raise RowError(f"the record is longer than {MAX_RECORD} characters (an unclosed quote?)")
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


MAX_RECORD = 64 * 1024
"""Characters of one record (and so of one line); a longer one is reported as a failed row and
reading goes on at the next line (an unclosed quote would otherwise swallow the rest of the file)."""
OVERSIZED = "\x00oversized-record"
"""Stands for a record over :data:`MAX_RECORD` in what :func:`split_records` yields."""
OFFLOAD_CHUNK = 16 * 1024
_BREAK = re.compile(r"\r\n|\r|\n")


class RecordSplitter:
    """Cuts decoded text into CSV records in linear time: lines and records are lists of parts
    joined once, never strings grown by concatenation."""

    def __init__(self, max_record: int = MAX_RECORD) -> None:
        self.max_record = max_record
        self.pending: list[str] = []  # the current, unfinished line
        self.pending_len = 0
        self.record: list[str] = []
        self.record_len = 0
        self.quotes = 0
        self.start = 1
        self.line_no = 0
        self.skipping = False  # the rest of a line whose record was too long

    def feed(self, text: str, final: bool = False) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        pos, n = 0, len(text)
        if self.pending and self.pending[-1].endswith("\r") and not text.startswith("\n") and (text or final):
            self._end_line(out)  # a lone CR ended the line
        while pos < n:
            m = _BREAK.search(text, pos)
            if m is None:
                self._add(text[pos:], out)
                break
            end = m.end()
            if m.group() == "\r" and end == n and not final:
                self._add(text[pos:], out)  # maybe the first half of CRLF
                break
            self._add(text[pos:end], out)
            self._end_line(out)
            pos = end
        if final:
            if self.pending:
                self._end_line(out)
            rec = "".join(self.record)
            if rec.strip():
                out.append((self.start, rec))
            self._reset_record()
        return out

    def _add(self, part: str, out: list[tuple[int, str]]) -> None:
        if self.skipping or not part:
            return
        self.pending.append(part)
        self.pending_len += len(part)
        if self.pending_len + self.record_len > self.max_record:
            out.append((self.start if self.record else self.line_no + 1, OVERSIZED))
            self._reset_record()
            self.pending, self.pending_len = [], 0
            self.skipping = True

    def _end_line(self, out: list[tuple[int, str]]) -> None:
        self.line_no += 1
        line = "".join(self.pending)
        self.pending, self.pending_len = [], 0
        if self.skipping:
            self.skipping = False
            return
        if not self.record:
            self.start = self.line_no
        self.record.append(line)
        self.record_len += len(line)
        self.quotes += line.count('"')
        if self.quotes % 2 == 0:
            rec = "".join(self.record)
            if rec.strip():
                out.append((self.start, rec))
            self._reset_record()

    def _reset_record(self) -> None:
        self.record, self.record_len, self.quotes = [], 0, 0


async def split_records(
    chunks: AsyncIterator[bytes],
    encoding: str | None = None,
    sniff_bytes: int = 4096,
    max_record: int = MAX_RECORD,
) -> AsyncIterator[tuple[int, str]]:
    """``(first line number, record text)`` for each CSV record of a byte stream, in order.

    A record ends at a line break outside quotes, so quoted cells may hold line breaks. The text
    is decoded incrementally (``encoding``, else sniffed from the first ``sniff_bytes``: UTF-8 with
    or without BOM, else Windows-1251). Blank lines are skipped. Only one record and one chunk
    are held at a time; a record over ``max_record`` characters comes as :data:`OVERSIZED`. The
    work is linear in the input, and large chunks are cut in a worker thread, off the event loop.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace") if encoding else None
    splitter = RecordSplitter(max_record)
    head = b""

    async def step(data: bytes, final: bool) -> list[tuple[int, str]]:
        assert decoder is not None
        dec = decoder

        def work() -> list[tuple[int, str]]:
            return splitter.feed(dec.decode(data, final=final), final)

        if len(data) >= OFFLOAD_CHUNK:
            return await asyncio.to_thread(work)
        return work()

    async for chunk in chunks:
        if not chunk:
            continue
        if decoder is None:
            head += chunk
            if len(head) < sniff_bytes:
                continue
            decoder = _pick_decoder(head)
            chunk, head = head, b""
        for rec in await step(chunk, False):
            yield rec
    if decoder is None:
        decoder = _pick_decoder(head)
    for rec in await step(head, True):
        yield rec


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
    return csv_line(cells)
