"""Time and ids, passed in so tests control them."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Protocol

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock for tests: stands still until moved."""

    def __init__(self, at: datetime) -> None:
        self._at = at

    def now(self) -> datetime:
        return self._at

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self._at = self._at + timedelta(seconds=seconds)


def new_id() -> str:
    """A 26-character, time-ordered, URL-safe id (ULID layout: 48-bit ms time + 80 random bits)."""
    return _encode_id((int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big"))


def first_id_at(unix_s: float) -> str:
    """The smallest id :func:`new_id` makes at ``unix_s``: ids made later sort after it."""
    return _encode_id(int(unix_s * 1000) << 80)


def _encode_id(value: int) -> str:
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes read back from MongoDB are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None
