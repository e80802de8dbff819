"""One raw RFC 5322 message → the unified :class:`Captured` email interaction.

Pure: no I/O, the clock is passed in, and it never raises on bad mail — a malformed message
is captured as far as it parses. The IMAP poller hands raw bytes downstream; the connectors
service calls :func:`parse_message` on them, normalises the addresses and publishes
``interaction.captured``.

Who is the client: every address in From/To/Cc that is neither the mailbox itself nor in the
tenant's ``own_domains``. Inbound mail (INBOX) is attributed to the From name, outbound (Sent)
to the first To name. Auto-replies, bounces and list mail are recognised and skipped.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, Literal

from services.connectors.adapters.base import Captured, Direction, Sender, Thread
from services.connectors.mail.text import (
    decode_bytes,
    decode_header_text,
    guess_decode,
    html_to_text,
    shorten,
    trim_reply,
)

FolderRole = Literal["inbox", "sent"]
SkipReason = Literal["auto_reply", "bounce", "bulk", "no_client"]

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 20_000
SUMMARY_CHARS = 200


@dataclass(frozen=True)
class ParsedMail:
    """What one message amounts to.

    ``captured`` holds one email interaction, or nothing when the message is ``skipped``:
    ``"auto_reply"`` (Auto-Submitted, X-Autoreply, out-of-office, read receipts), ``"bounce"``
    (delivery status reports, mailer-daemon), ``"bulk"`` (List-Id, Precedence bulk/list/junk) or
    ``"no_client"`` (every address is ours: internal mail).
    """

    captured: tuple[Captured, ...]
    skipped: SkipReason | None
    message_id: str
    """The Message-ID as written (``<id@host>``), else ``sha256:<hex>`` of the raw bytes."""
    thread_id: str
    idempotency_key: str


# ---- small header helpers --------------------------------------------------------------------


def _raw_headers(msg: Message, name: str) -> list[str]:
    """Every raw value of header ``name`` (no policy parsing: that may raise on bad headers)."""
    lname = name.lower()
    try:
        return [str(v) for k, v in msg.raw_items() if k.lower() == lname]
    except Exception:
        return []


def _header(msg: Message, name: str) -> str:
    values = _raw_headers(msg, name)
    return decode_header_text(values[0]) if values else ""


def _has_header(msg: Message, name: str) -> bool:
    return bool(_raw_headers(msg, name))


@dataclass(frozen=True)
class Address:
    name: str | None
    email: str


def _addresses(raw_values: Sequence[str]) -> list[Address]:
    """Parse address headers from their raw form (so decoded names with commas cannot split)."""
    out: list[Address] = []
    seen: set[str] = set()
    try:
        pairs = getaddresses(list(raw_values))
    except Exception:
        pairs = []
    for name, addr in pairs:
        addr = decode_header_text(addr).strip().strip("<>").lower()
        if "@" not in addr or " " in addr or addr in seen:
            continue
        seen.add(addr)
        display = decode_header_text(name).strip().strip("\"'").strip() or None
        if display and display.lower() == addr:
            display = None
        out.append(Address(display, addr))
    return out


def _header_addresses(msg: Message, name: str) -> list[Address]:
    return _addresses(_raw_headers(msg, name))


def _msg_ids(value: str) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value)


def _own_message_id(value: str) -> str | None:
    """The message's ``<id>``; a bare ``id@host`` (some mailers omit the brackets) is wrapped."""
    ids = _msg_ids(value)
    if ids:
        return ids[0]
    bare = value.strip()
    if bare and " " not in bare and "@" in bare and len(bare) <= 512:
        return f"<{bare}>"
    return None


def _date(msg: Message, now: datetime) -> datetime:
    raw = _header(msg, "Date")
    return _parse_date(raw, now) or now


def _parse_date(raw: str, now: datetime) -> datetime | None:
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except Exception:
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when > now + timedelta(days=1):  # a sender's broken clock must not put mail in the future
        return now
    return when


# ---- MIME walking ---------------------------------------------------------------------------


@dataclass
class _Body:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    embedded: list[Message] = field(default_factory=list)

    def text(self) -> str:
        if any(p.strip() for p in self.plain):
            return "\n\n".join(p.strip("\n") for p in self.plain if p.strip())
        return "\n\n".join(html_to_text(h) for h in self.html if h.strip())


def _ctype(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _filename(part: Message) -> str | None:
    name: Any
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        try:
            name = part.get_param("name")
        except Exception:
            name = None
        if isinstance(name, tuple):  # RFC 2231 triple
            name = decode_bytes(str(name[2]).encode("latin-1", "replace"), name[0])
    if not name:
        return None
    return decode_header_text(str(name)) or None


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _encoded_size(part: Message) -> int:
    """The decoded size, estimated without decoding (base64: 3 bytes per 4 characters)."""
    raw = part.get_payload()
    if not isinstance(raw, str):
        return 0
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        stripped = "".join(raw.split())
        return max(0, len(stripped) * 3 // 4 - stripped[-2:].count("="))
    return len(raw)


def _attachment_size(part: Message, max_bytes: int) -> int:
    """Exact for small parts; large ones are estimated rather than decoded."""
    estimate = _encoded_size(part)
    return len(_payload_bytes(part)) if estimate <= max_bytes else estimate


def _part_text(part: Message) -> str:
    data = _payload_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    text = decode_bytes(data, charset) if charset else guess_decode(data)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _walk(part: Message, body: _Body, max_bytes: int, depth: int = 0) -> None:
    if depth > 20:
        return
    ctype = _ctype(part)
    if ctype == "message/rfc822" or (ctype.startswith("message/") and part.is_multipart()):
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        size = len(inner.as_bytes()) if isinstance(inner, Message) and _safe(inner) else 0
        subject = _header(inner, "Subject") if isinstance(inner, Message) else ""
        name = _filename(part) or (f"{subject}.eml" if subject else "message.eml")
        body.attachments.append({"name": name, "type": ctype, "size": size})
        if isinstance(inner, Message) and size <= max_bytes:
            body.embedded.append(inner)
        return
    if part.is_multipart():
        payload = part.get_payload()
        children = [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else []
        if ctype == "multipart/alternative" and children:
            for wanted in ("text/plain", "text/html"):
                chosen = [c for c in children if _ctype(c) == wanted]
                if chosen and (wanted != "text/plain" or _part_text(chosen[0]).strip()):
                    _walk(chosen[0], body, max_bytes, depth + 1)
                    return
            # e.g. alternative of multipart/related: take the last (richest) part
            _walk(children[-1], body, max_bytes, depth + 1)
            return
        for index, child in enumerate(children):
            if ctype == "multipart/related" and index > 0 and _is_inline_resource(child):
                continue  # logos and pictures the HTML shows, not attachments
            _walk(child, body, max_bytes, depth + 1)
        return
    filename = _filename(part)
    disposition = _disposition(part)
    is_text = ctype in ("text/plain", "text/html")
    if disposition == "attachment" or (filename and not is_text) or not is_text:
        if filename or disposition == "attachment" or not ctype.startswith(("text/", "multipart/")):
            size = _attachment_size(part, max_bytes)
            body.attachments.append({"name": filename or "attachment", "type": ctype, "size": size})
        return
    if _encoded_size(part) > max_bytes * 4:  # an absurd text part: list it, don't decode it
        body.attachments.append({"name": filename or "body", "type": ctype, "size": 0})
        return
    text = _part_text(part)
    (body.plain if ctype == "text/plain" else body.html).append(text)


def _is_inline_resource(part: Message) -> bool:
    return (
        not part.is_multipart()
        and bool(part.get("Content-ID"))
        and _disposition(part) != "attachment"
        and not _ctype(part).startswith("text/")
    )


def _safe(msg: Message) -> bool:
    try:
        msg.as_bytes()
        return True
    except Exception:
        return False


def _body(msg: Message, max_bytes: int) -> _Body:
    body = _Body()
    try:
        _walk(msg, body, max_bytes)
    except Exception:  # never fail on structure; keep what we have
        log.debug("mail structure partly unreadable", exc_info=False)
    return body


# ---- skips ----------------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[\s_-]*(reply|response|answer)|autoreply|auto:|out of (the )?office|"
    r"abwesenheit|réponse automatique|автоответ|автоматический ответ|"
    r"нет на месте|вне офиса|в отпуске|я в отпуске)",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)


def _skip_reason(msg: Message, subject: str, from_addrs: list[Address]) -> SkipReason | None:
    ctype = _ctype(msg)
    if ctype == "multipart/report":
        try:
            report = str(msg.get_param("report-type") or "").lower()
        except Exception:
            report = ""
        return "auto_reply" if report == "disposition-notification" else "bounce"
    if any(_DAEMON.match(a.email) for a in from_addrs):
        return "bounce"
    auto = _header(msg, "Auto-Submitted").lower()
    if auto and not auto.startswith("no"):
        return "auto_reply"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if _has_header(msg, name):
            return "auto_reply"
    if _header(msg, "X-Autogenerated").lower() == "reply":
        return "auto_reply"
    precedence = _header(msg, "Precedence").lower()
    if precedence == "auto_reply":
        return "auto_reply"
    if _AUTO_SUBJECT.match(subject):
        return "auto_reply"
    if _has_header(msg, "List-Id") or precedence in ("bulk", "list", "junk"):
        return "bulk"
    return None


# ---- forwards -------------------------------------------------------------------------------

_FWD_SUBJECT = re.compile(r"^\s*(fwd?|пересл(ано)?|fw)\s*:", re.IGNORECASE)
_FWD_MARKER = re.compile(
    r"^\s*(-{2,}\s*(Forwarded message|Пересылаемое сообщение|Пересланное сообщение|"
    r"Переадресованное сообщение|Original Message|Исходное сообщение)\s*-{2,}|"
    r"_{10,}|Begin forwarded message\s*:|Начало переадресованного сообщения\s*:)\s*$",
    re.IGNORECASE,
)
_FWD_FIELD = re.compile(
    r"^\s*\**\s*(From|От|Date|Sent|Дата|Отправлено|Subject|Тема|To|Кому|Cc|Копия)\s*\**\s*:\s*(.*)$",
    re.IGNORECASE,
)
_WHO_COLON = re.compile(r"^\s*(.*?)\s*<([^<>@\s]+@[^<>\s]+)>\s*:\s*$")
_FIELD_KEYS = {
    "from": "from", "от": "from",
    "date": "date", "sent": "date", "дата": "date", "отправлено": "date",
    "subject": "subject", "тема": "subject",
    "to": "to", "кому": "to",
    "cc": "cc", "копия": "cc",
}  # fmt: skip


@dataclass(frozen=True)
class _Original:
    from_: list[Address]
    to: list[Address]
    cc: list[Address]
    subject: str
    date: datetime | None
    message_id: str | None
    body: str


def _inline_forward(text: str, now: datetime, subject_forwarded: bool) -> _Original | None:
    """The original message of a forward written inline.

    Either a marker line ("---------- Forwarded message ---------", "-------- Пересылаемое
    сообщение --------", Outlook's underscores) followed by From:/Date:/Subject:/To: lines (or the
    Yandex "date, Name <addr>:" line), or — when the subject says Fwd:/FW: — a bare Outlook
    header block (From:/Sent:/To:/Subject:, or От:/Отправлено:/Кому:/Тема:).
    """
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if _FWD_MARKER.match(line):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
        elif subject_forwarded and _is_from_field(line) and _next_is_field(lines, i):
            j = i
        else:
            continue
        fields: dict[str, str] = {}
        while j < len(lines):
            m = _FWD_FIELD.match(lines[j])
            if not m:
                break
            key = _FIELD_KEYS[m.group(1).lower()]
            fields.setdefault(key, m.group(2).strip().strip("*").strip())
            j += 1
        if "from" not in fields and j < len(lines):
            # Yandex / Mail.ru: '14.11.2025, 08:30, "Дмитрий" <dmitry@client.ru>:'
            m = _WHO_COLON.match(lines[j])
            if m:
                name = m.group(1).rsplit(",", 1)[-1].strip().strip("\"'").strip()
                name = re.sub(r"^от\s+", "", name, flags=re.IGNORECASE)
                fields["from"] = f'"{name}" <{m.group(2)}>' if name else m.group(2)
                j += 1
        if "from" not in fields:
            continue
        from_ = _addresses([_bracket_bare(fields["from"])])
        if not from_:
            continue
        rest = "\n".join(lines[j:]).strip()
        return _Original(
            from_=from_,
            to=_addresses([fields.get("to", "")]),
            cc=_addresses([fields.get("cc", "")]),
            subject=fields.get("subject", ""),
            date=_parse_date(fields.get("date", ""), now),
            message_id=None,
            body=rest,
        )
    return None


def _is_from_field(line: str) -> bool:
    m = _FWD_FIELD.match(line)
    return m is not None and _FIELD_KEYS[m.group(1).lower()] == "from"


def _next_is_field(lines: list[str], i: int) -> bool:
    following = [ln for ln in lines[i + 1 : i + 3] if ln.strip()]
    return bool(following) and bool(_FWD_FIELD.match(following[0]))


def _bracket_bare(value: str) -> str:
    """Outlook writes ``From: Ivan Petrov [mailto:ivan@x.ru]`` or ``Ivan Petrov ivan@x.ru``."""
    value = re.sub(r"\[mailto:([^\]]+)\]", r"<\1>", value)
    if "<" not in value:
        m = re.search(r"[^\s<>\"'()\[\]]+@[^\s<>\"'()\[\]]+", value)
        if m and m.group(0) != value.strip():
            name = value.replace(m.group(0), "").strip(" \"'()")
            return f'"{name}" <{m.group(0)}>' if name else m.group(0)
    return value


def _embedded_original(inner: Message, max_bytes: int, now: datetime) -> _Original:
    body = _body(inner, max_bytes)
    ids = _msg_ids(_header(inner, "Message-ID"))
    return _Original(
        from_=_header_addresses(inner, "From"),
        to=_header_addresses(inner, "To"),
        cc=_header_addresses(inner, "Cc"),
        subject=_header(inner, "Subject"),
        date=_parse_date(_header(inner, "Date"), now),
        message_id=ids[0] if ids else None,
        body=body.text(),
    )


# ---- the entry point ------------------------------------------------------------------------


def _is_own(addr: str, own: set[str], own_domains: Sequence[str]) -> bool:
    if addr in own:
        return True
    domain = addr.rsplit("@", 1)[-1]
    return any(domain == d or domain.endswith("." + d) for d in own_domains)


def parse_message(
    raw: bytes,
    *,
    mailbox_address: str,
    own_domains: Sequence[str],
    folder_role: FolderRole,
    channel_id: str,
    now: datetime,
    max_attachment_bytes: int = 256 * 1024,
    forward_mode: bool = False,
) -> ParsedMail:
    """Parse one raw message from the mailbox ``mailbox_address`` of channel ``channel_id``.

    ``folder_role`` says whether it was found in the inbox (direction ``in``) or the sent folder
    (``out``). ``forward_mode`` is for a mailbox that receives forwards and BCC copies from staff:
    a forward is attributed to the original sender; a BCC copy of staff's own mail is ``out``.
    ``max_attachment_bytes`` bounds the embedded messages (``message/rfc822``) that are opened.
    Never raises.
    """
    msg = message_from_bytes(raw, policy=policy.default)
    digest = hashlib.sha256(raw).hexdigest()
    message_id = _own_message_id(_header(msg, "Message-ID")) or f"sha256:{digest}"
    refs = _msg_ids(_header(msg, "References"))
    in_reply_to = _msg_ids(_header(msg, "In-Reply-To"))
    thread_id = refs[0] if refs else in_reply_to[0] if in_reply_to else message_id
    key = f"imap:{channel_id}:{message_id}"

    subject = _header(msg, "Subject")
    from_ = _header_addresses(msg, "From")
    to = _header_addresses(msg, "To")
    cc = _header_addresses(msg, "Cc")
    reply_to = _header_addresses(msg, "Reply-To")
    own_domains_l = [d.strip().lower().lstrip("@") for d in own_domains if d.strip()]
    own = {mailbox_address.strip().lower()}

    def result(captured: tuple[Captured, ...], skipped: SkipReason | None) -> ParsedMail:
        return ParsedMail(captured, skipped, message_id, thread_id, key)

    skipped = _skip_reason(msg, subject, from_)
    if skipped:
        return result((), skipped)

    body = _body(msg, max_attachment_bytes)
    body_text = body.text()
    occurred_at = _date(msg, now)
    direction: Direction = "in" if folder_role == "inbox" else "out"
    data: dict[str, Any] = {}

    original: _Original | None = None
    if forward_mode:
        # The forwarder (outer From) is staff by definition.
        own.update(a.email for a in from_)
        looks_forwarded = bool(_FWD_SUBJECT.match(subject)) or bool(body.embedded)
        if body.embedded:
            original = _embedded_original(body.embedded[0], max_attachment_bytes, now)
        if original is None or not original.from_:
            inline = _inline_forward(body_text, now, bool(_FWD_SUBJECT.match(subject)))
            if inline is not None:
                original, looks_forwarded = inline, True
        if original is not None and original.from_ and looks_forwarded:
            data["forwarded"] = True
            if original.message_id:
                data["original_message_id"] = original.message_id
            subject = original.subject or re.sub(_FWD_SUBJECT, "", subject).strip()
            from_, to, cc, reply_to = original.from_, original.to, original.cc, []
            occurred_at = original.date or occurred_at
            body_text = original.body or body_text
        else:
            original = None
        sender_is_own = bool(from_) and all(_is_own(a.email, own, own_domains_l) for a in from_)
        direction = "out" if sender_is_own else "in"

    # Inbound: From first, so its display name names the client; outbound: the first To.
    # Reply-To counts on inbound mail: site forms send From a no-reply address of our own.
    ordered = from_ + reply_to + to + cc if direction == "in" else to + cc + from_
    clients: list[Address] = []
    for a in ordered:
        if not _is_own(a.email, own, own_domains_l) and all(c.email != a.email for c in clients):
            clients.append(a)
    if not clients:
        return result((), "no_client")
    emails = [c.email for c in clients]
    name = clients[0].name

    answer_to = next(
        (a.email for a in reply_to if direction == "in" and not _is_own(a.email, own, own_domains_l)),
        emails[0],
    )
    summary = shorten(trim_reply(body_text), SUMMARY_CHARS) or shorten(subject, SUMMARY_CHARS)
    data.update(
        {
            "subject": subject,
            "message_id": message_id,
            "thread_id": thread_id,
            "from": [a.email for a in from_],
            "to": [a.email for a in to],
            "cc": [a.email for a in cc],
            "reply_to": [a.email for a in reply_to],
            "body_text": body_text[:MAX_BODY_CHARS],
            "attachments": body.attachments,
        }
    )
    captured = Captured(
        idempotency_key=key,
        kind="email",
        direction=direction,
        occurred_at=occurred_at,
        sender=Sender(name=name, emails=tuple(emails)),
        summary=summary,
        data=data,
        subject_key=key,
        thread=Thread(
            f"mail:{thread_id}",
            {
                "to": [answer_to],
                "subject": subject,
                "in_reply_to": message_id,
                "references": [*(refs or in_reply_to), message_id][-20:],
            },
        ),
        provider_message_id=message_id,
    )
    return result((captured,), None)
