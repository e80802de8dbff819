"""Deal and task events of other services as items on a contact's timeline (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.clock import as_utc

DEAL_EVENTS = ("deal.created", "deal.stage_changed", "deal.won", "deal.lost")
TASK_EVENTS = ("task.created", "task.completed")

_DEAL_KEYS = (
    "deal_id",
    "pipeline_id",
    "stage_id",
    "from_stage_id",
    "to_stage_id",
    "status",
    "amount",
    "currency",
    "owner_id",
    "lost_reason",
)
_TASK_KEYS = ("task_id", "deal_id", "assignee_id", "kind", "title", "due_at", "status", "result")


def _when(payload: dict[str, Any], fallback: datetime) -> datetime:
    raw = payload.get("occurred_at") or payload.get("completed_at")
    if isinstance(raw, str):
        try:
            return as_utc(datetime.fromisoformat(raw))
        except ValueError:
            pass
    return as_utc(fallback)


def activity_item(event_type: str, payload: dict[str, Any], occurred_at: datetime) -> dict[str, Any] | None:
    """``{"kind", "direction", "occurred_at", "summary", "data"}`` for an event about a contact, or
    ``None`` when the event is not one the timeline shows or names no contact."""
    if not payload.get("contact_id"):
        return None
    at = _when(payload, occurred_at)
    if event_type in DEAL_EVENTS:
        data = {k: payload[k] for k in _DEAL_KEYS if payload.get(k) is not None}
        data["event"] = event_type.split(".", 1)[1]
        summary = {
            "deal.created": "Deal created",
            "deal.stage_changed": "Deal moved to another stage",
            "deal.won": "Deal won",
            "deal.lost": "Deal lost",
        }[event_type]
        if event_type == "deal.lost" and payload.get("lost_reason"):
            summary += f": {payload['lost_reason']}"
        return {"kind": "deal", "direction": "out", "occurred_at": at, "summary": summary, "data": data}
    if event_type in TASK_EVENTS:
        data = {k: payload[k] for k in _TASK_KEYS if payload.get(k) is not None}
        data["event"] = event_type.split(".", 1)[1]
        verb = "Task created" if event_type == "task.created" else "Task completed"
        title = payload.get("title")
        summary = f"{verb}: {title}" if title else verb
        return {"kind": "task", "direction": "out", "occurred_at": at, "summary": summary, "data": data}
    return None
