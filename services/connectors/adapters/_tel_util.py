"""Helpers shared by the telephony and messenger adapters (twilio, zadarma, mango, asterisk,
telegram).

Everything here is pure: parsing of the raw request, the uniform 400/415/422 errors, time and
duration handling, and short human summaries that never carry raw HTML or control characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .base import CallStatus, Captured, Direction, HookError, RawRequest, Sender

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPES = ("application/json", "text/json")
DEFAULT_TIMEZONE = "Europe/Moscow"
MAX_DURATION_S = 7 * 24 * 3600
"""No real call lasts longer than a week; larger numbers are treated as garbage (dropped)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


# ---- errors ---------------------------------------------------------------------------------


def unsupported_media(got: str, expected: str) -> HookError:
    return HookError(
        415,
        "Unsupported media type",
        f"Expected {expected}, got {got or 'no Content-Type'}.",
    )


def malformed(detail: str) -> HookError:
    return HookError(400, "Malformed request body", detail)


def invalid(errors: Mapping[str, str]) -> HookError:
    return HookError(
        422,
        "Invalid payload",
        "The payload is missing required fields or has invalid values.",
        dict(errors),
    )


# ---- request parsing ------------------------------------------------------------------------


def require_form(request: RawRequest) -> None:
    if request.content_type != FORM_TYPE:
        raise unsupported_media(request.content_type, FORM_TYPE)


def require_json(request: RawRequest) -> None:
    ctype = request.content_type
    if ctype in JSON_TYPES or (ctype.startswith("application/") and ctype.endswith("+json")):
        return
    raise unsupported_media(ctype, "application/json")


def form_pairs(body: bytes) -> list[tuple[str, str]]:
    """Decode an urlencoded body into (name, value) pairs, keeping repeats and blanks."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed("The form body is not valid UTF-8.") from exc
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed("The form body cannot be decoded.") from exc


def form_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Pairs as a flat dict; the last value of a repeated name wins."""
    return dict(pairs)


def json_value(text: str | bytes, what: str = "The body") -> Any:
    """Parse JSON text; 400 when it is not JSON or smuggles lone surrogates (``"\\ud800"``),
    which no UTF-8 store downstream could keep."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise malformed(f"{what} is not valid JSON.") from exc
    return value


def json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON body that must be an object: 400 when unparseable, 422 when not an object."""
    value = json_value(body)
    if not isinstance(value, dict):
        raise invalid({"body": "must be a JSON object"})
    return value


# ---- scalar coercion ------------------------------------------------------------------------


def text_of(value: Any) -> str | None:
    """A scalar JSON/form value as text (numbers become their decimal text); else ``None``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    return None


def int_of(value: Any, *, upper: int | None = None) -> int | None:
    """A non-negative integer from a number or digit string; ``None`` for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        result = int(value)
    elif isinstance(value, str):
        s = value.strip()
        if not s.isascii() or not s.isdigit() or len(s) > 18:
            return None
        result = int(s)
    else:
        return None
    if result < 0 or (upper is not None and result > upper):
        return None
    return result


def duration_of(value: Any) -> int | None:
    return int_of(value, upper=MAX_DURATION_S)


# ---- time -----------------------------------------------------------------------------------


def zone_of(config: Mapping[str, Any], key: str = "timezone") -> tzinfo:
    """The channel's time zone (``config.timezone``), Europe/Moscow when unset or unknown."""
    name = config.get(key)
    if isinstance(name, str) and name.strip():
        try:
            return ZoneInfo(name.strip())
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(DEFAULT_TIMEZONE)


def local_datetime(value: Any, zone: tzinfo) -> datetime | None:
    """``YYYY-MM-DD HH:MM:SS`` (or ISO 8601) in ``zone`` → aware UTC datetime; ``None`` if bad."""
    s = text_of(value)
    if s is None or len(s) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(s)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None  # not a date, or so close to year 1 / 9999 that UTC falls off the calendar


def unix_datetime(value: Any) -> datetime | None:
    """Unix seconds (int or digit string) → aware UTC datetime; ``None`` when absent or absurd."""
    seconds = int_of(value, upper=32503680000)  # year 3000
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def utc(now: datetime) -> datetime:
    """``now`` as an aware UTC datetime (a naive clock is taken to be UTC)."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


# ---- human text -----------------------------------------------------------------------------


def format_duration(seconds: int) -> str:
    """``125`` → ``"2 min 5 s"``; ``3600`` → ``"1 h"``; ``0`` → ``"0 s"``."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    if secs or not parts:
        parts.append(f"{secs} s")
    return " ".join(parts)


def plain_preview(text: str | None, limit: int = 100) -> str:
    """Text safe for a summary: tags and control characters removed, whitespace collapsed,
    angle brackets dropped, cut to ``limit`` characters."""
    if not text:
        return ""
    s = _TAG.sub(" ", text)
    s = _CONTROL.sub(" ", s).replace("<", " ").replace(">", " ")
    s = _SPACE.sub(" ", s).strip()
    if len(s) > limit:
        s = s[: limit - 1].rstrip() + "…"
    return s


def call_summary(direction: Direction, status: CallStatus | None, duration_s: int | None) -> str:
    """``Missed inbound call``, ``Inbound call, 2 min 5 s``, ``Outbound call, busy``..."""
    way = "inbound" if direction == "in" else "outbound"
    if status == "missed":
        return f"Missed {way} call"
    label = way.capitalize() + " call"
    if status == "answered":
        return f"{label}, {format_duration(duration_s)}" if duration_s is not None else label
    if status == "busy":
        return f"{label}, busy"
    if status == "failed":
        return f"{label} failed"
    if status == "ringing":
        return f"{label}, ringing"
    if status == "in_progress":
        return f"{label} in progress"
    return label


def _is_web_url(value: str) -> bool:
    parts = urlsplit(value.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def call_data(
    *,
    status: CallStatus | None,
    duration_s: int | None,
    recording_url: str | None,
    from_: str | None,
    to: str | None,
    call_id: str,
    **extra: Any,
) -> dict[str, Any]:
    """The ``data`` of a call item: only the keys that are known (no ``None`` placeholders), so a
    later event merged into the same timeline item never overwrites a value with nothing."""
    data: dict[str, Any] = {"call_id": call_id}
    if status == "missed" and duration_s is None:
        duration_s = 0  # nobody talked: a missed call lasted 0 s (Mango sends no duration at all)
    if recording_url is not None and not _is_web_url(recording_url):
        recording_url = None  # only http(s): a javascript: or file: link is never put on a card
    for key, value in (
        ("status", status),
        ("duration_s", duration_s),
        ("recording_url", recording_url),
        ("from", from_),
        ("to", to),
        *extra.items(),
    ):
        if value is not None:
            data[key] = value
    return data


def recording_item(
    *,
    idempotency_key: str,
    subject_key: str,
    direction: Direction,
    occurred_at: datetime,
    call_id: str,
    recording_url: str | None = None,
    **extra: Any,
) -> Captured:
    """A finished recording of a call: no client of its own (it joins its call through
    ``subject_key``), no status; ``extra`` are further ``data`` keys (``recording_id``...)."""
    return Captured(
        idempotency_key=idempotency_key,
        kind="call",
        direction=direction,
        occurred_at=occurred_at,
        sender=Sender(),
        summary="Call recording",
        data=call_data(
            status=None,
            duration_s=None,
            recording_url=recording_url,
            from_=None,
            to=None,
            call_id=call_id,
            **extra,
        ),
        subject_key=subject_key,
    )


def phones(*numbers: str | None) -> tuple[str, ...]:
    """The given numbers that are non-empty, as written, without duplicates."""
    out: list[str] = []
    for n in numbers:
        if n and n not in out:
            out.append(n)
    return tuple(out)
