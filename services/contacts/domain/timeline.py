"""Timeline items: the one builder of an item, and how events about one subject fold into it (pure).

An item is what a contact's timeline shows: a call, a form, a message, a note, a deal or task event.
Events about one real-world thing (a call's start, end and recording) share a ``subject_key`` and
become one item, in any order; the provider's event keys on the item make a repeat a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.clock import as_utc, new_id

FINAL_CALL = ("answered", "missed", "busy", "failed")


@dataclass(frozen=True)
class TimelineItem:
    """One item of a contact's timeline, as it is stored (:meth:`doc`)."""

    id: str
    tenant_id: str
    contact_id: str
    kind: str
    direction: str
    occurred_at: datetime
    subject_key: str
    created_at: datetime
    channel_id: str | None = None
    summary: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    event_keys: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields only some items carry (``logged_by`` of a note logged by hand)."""

    @classmethod
    def new(
        cls,
        *,
        tenant_id: str,
        contact_id: str,
        kind: str,
        direction: str,
        occurred_at: datetime,
        now: datetime,
        channel_id: str | None = None,
        summary: str | None = None,
        data: dict[str, Any] | None = None,
        subject_key: str | None = None,
        event_keys: list[str] | None = None,
        item_id: str | None = None,
        **extra: Any,
    ) -> TimelineItem:
        """A new item; without a ``subject_key`` it is its own subject (``manual:<id>``)."""
        item_id = item_id or new_id()
        return cls(
            id=item_id,
            tenant_id=tenant_id,
            contact_id=contact_id,
            kind=kind,
            direction=direction,
            occurred_at=occurred_at,
            subject_key=subject_key or f"manual:{item_id}",
            created_at=now,
            channel_id=channel_id,
            summary=summary,
            data=dict(data or {}),
            event_keys=list(event_keys or []),
            extra=extra,
        )

    def doc(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "tenant_id": self.tenant_id,
            "contact_id": self.contact_id,
            "kind": self.kind,
            "direction": self.direction,
            "occurred_at": self.occurred_at,
            "channel_id": self.channel_id,
            "summary": self.summary,
            "data": self.data,
            "subject_key": self.subject_key,
            "event_keys": self.event_keys,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            **self.extra,
        }


def merge_data(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a later-or-earlier event of the same subject into the item's data.

    A final call status never goes back to a non-final one. A different final status replaces the
    old one with its own duration: connectors publish each call event with the verdict of every leg
    seen so far (a caller leg ``completed`` becomes ``missed`` once the dialled leg said no-answer),
    so the newer verdict knows more."""
    out = dict(old)
    if new.get("status") in FINAL_CALL and old.get("status") in FINAL_CALL and new["status"] != old["status"]:
        out.pop("duration_s", None)
    for key, value in new.items():
        if value is None:
            continue
        if key == "status" and out.get("status") in FINAL_CALL and value not in FINAL_CALL:
            continue  # a late "ringing" never undoes a final status
        if key == "duration_s" and isinstance(out.get(key), int | float):
            out[key] = max(out[key], value)
            continue
        out[key] = value
    return out


def fold_event(
    existing: dict[str, Any], *, occurred_at: datetime, data: dict[str, Any], summary: str
) -> dict[str, Any]:
    """The fields of a stored item after another event of its subject: the earliest time, the
    merged data, and the new summary when the call just became final (or the item had none)."""
    merged = merge_data(existing.get("data", {}), data)
    final_now = merged.get("status") in FINAL_CALL and merged.get("status") != (
        existing.get("data") or {}
    ).get("status")
    return {
        "occurred_at": min(as_utc(existing["occurred_at"]), occurred_at),
        "data": merged,
        "summary": summary if final_now or not existing.get("summary") else existing["summary"],
    }


def is_missed_call(interaction: dict[str, Any]) -> bool:
    """An inbound call nobody answered."""
    return (
        interaction.get("kind") == "call"
        and interaction.get("direction") == "in"
        and (interaction.get("data") or {}).get("status") == "missed"
    )


RECORDED_DATA_KEYS = ("status", "duration_s")
"""What ``interaction.recorded`` carries of a hand-logged item's data (no free text)."""
