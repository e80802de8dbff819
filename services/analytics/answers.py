"""Real answer times from conversations (``message.sent``): how long each customer who wrote
waited for our answer, from ``awaiting_reply_since`` to the moment the provider took the answer.

The read model ``answers`` keeps one row per answer that somebody was waiting for; the
``response-time`` report adds them as ``replies`` (per assignee) beside its first-touch ``items``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.clock import as_utc
from shared.events import Envelope
from shared.mongo import UnitOfWork

Doc = dict[str, Any]


def _at(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str) and value:
        return as_utc(datetime.fromisoformat(value))
    return None


async def record_answer(uow: UnitOfWork, env: Envelope) -> None:
    p = env.payload
    waited, answered = _at(p.get("awaiting_reply_since")), _at(p.get("occurred_at"))
    if waited is None or answered is None:
        return  # a follow-up nobody was waiting for
    await uow.db.answers.update_one(
        {"_id": p["message_id"], "tenant_id": env.tenant_id},
        {
            "$setOnInsert": {
                "assignee_id": p.get("assignee_id"),
                "contact_id": p.get("contact_id"),
                "channel_kind": p.get("channel_kind"),
                "waited_since": waited,
                "answered_at": answered,
            }
        },
        upsert=True,
        session=uow.session,
    )


def replies(
    answers: Sequence[Doc], start: datetime | None, end: datetime | None, sla_minutes: int
) -> list[Doc]:
    """Per assignee: answers given in the period, average and median wait, the share within SLA."""
    waits: dict[str | None, list[float]] = defaultdict(list)
    for a in answers:
        answered = as_utc(a["answered_at"])
        if (start and answered < start) or (end and answered >= end):
            continue
        waits[a.get("assignee_id")].append((answered - as_utc(a["waited_since"])).total_seconds() / 60)
    return [
        {
            "assignee_id": who,
            "answered": len(mins),
            "avg_minutes": round(statistics.fmean(mins), 1),
            "median_minutes": round(statistics.median(mins), 1),
            "within_sla": round(sum(1 for m in mins if m <= sla_minutes) / len(mins), 4),
        }
        for who, mins in sorted(waits.items(), key=lambda kv: str(kv[0]))
    ]
