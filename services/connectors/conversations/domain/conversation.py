"""A conversation's counters and the status of its messages, as pure functions.

- ``unread``: inbound messages since a manager last read or answered the conversation.
- ``awaiting_reply_since``: when the oldest inbound message still without an answer arrived; an
  answer clears it when the provider accepted it (``sent``), not when it was queued, so the
  response-time report measures real answer times.
- A message's status only moves forward (``queued`` → ``sent`` → ``delivered`` → ``read``); a
  late ``delivered`` after ``read`` changes nothing, and ``failed`` ends a message that was not
  yet delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

Status = Literal["received", "queued", "sent", "delivered", "read", "failed"]
RANK: dict[str, int] = {"queued": 0, "sent": 1, "delivered": 2, "read": 3}


@dataclass(frozen=True)
class Counters:
    unread: int = 0
    last_message_at: datetime | None = None
    awaiting_reply_since: datetime | None = None


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def on_inbound(state: Counters, at: datetime) -> Counters:
    """A customer's message arrived (``at``: when they sent it)."""
    waiting = state.awaiting_reply_since
    return Counters(
        unread=state.unread + 1,
        last_message_at=_later(state.last_message_at, at),
        awaiting_reply_since=at if waiting is None or at < waiting else waiting,
    )


def on_answer_sent(state: Counters, at: datetime) -> tuple[Counters, datetime | None]:
    """Our message reached the provider at ``at``: the conversation is read, and whoever waited
    before ``at`` has their answer. Returns the new counters and since when the customer had been
    waiting (``None``: a follow-up nobody was waiting for)."""
    last = _later(state.last_message_at, at)
    waited = state.awaiting_reply_since
    if waited is not None and waited > at:
        return replace(state, unread=0, last_message_at=last), None  # they wrote after it went out
    return Counters(unread=0, last_message_at=last, awaiting_reply_since=None), waited


def on_read(state: Counters) -> Counters:
    return replace(state, unread=0)


def next_status(current: str, reported: str) -> str | None:
    """The message's status after a report, or ``None`` when the report changes nothing."""
    if current == reported or current in ("failed", "received"):
        return None
    if reported == "failed":
        return "failed" if RANK.get(current, 0) < RANK["delivered"] else None
    if reported not in RANK:
        return None
    return reported if RANK[reported] > RANK.get(current, 0) else None
