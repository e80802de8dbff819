"""Stored documents as the answers of the contract (:mod:`services.contacts.api`)."""

from __future__ import annotations

from typing import Any

from services.contacts.api import (
    CompanyOut,
    ContactExportCard,
    ContactOut,
    InboxItemOut,
    Sender,
    Source,
    TimelineItemOut,
)
from shared.clock import iso


def _source(raw: Any) -> Source | None:
    return Source.model_validate(raw) if isinstance(raw, dict) else None


def contact_view(doc: dict[str, Any]) -> ContactOut:
    return ContactOut(
        id=doc["_id"],
        name=doc.get("name"),
        phones=doc.get("phones", []),
        emails=doc.get("emails", []),
        handles=doc.get("handles", []),
        company_id=doc.get("company_id"),
        owner_id=doc.get("owner_id"),
        tags=doc.get("tags", []),
        custom=doc.get("custom", {}),
        source=_source(doc.get("source")),
        created_at=iso(doc.get("created_at")) or "",
        updated_at=iso(doc.get("updated_at")) or "",
        merged_into=doc.get("merged_into"),
    )


def export_card(doc: dict[str, Any]) -> ContactExportCard:
    return ContactExportCard(
        **contact_view(doc).model_dump(),
        raw_phones=doc.get("raw_phones", []),
        merged_ids=doc.get("merged_ids", []),
        last_activity_at=doc.get("last_activity_at"),
    )


def timeline_view(doc: dict[str, Any]) -> TimelineItemOut:
    return TimelineItemOut(
        id=doc["_id"],
        kind=doc["kind"],
        direction=doc["direction"],
        occurred_at=iso(doc["occurred_at"]) or "",
        channel_id=doc.get("channel_id"),
        summary=doc.get("summary") or "",
        data=doc.get("data") or {},
    )


def inbox_view(doc: dict[str, Any]) -> InboxItemOut:
    sender = doc.get("sender") or {}
    inter = doc.get("interaction") or {}
    return InboxItemOut(
        id=doc["_id"],
        status=doc["status"],
        channel_id=doc.get("channel_id"),
        channel_kind=doc.get("channel_kind"),
        received_at=iso(doc.get("received_at")),
        sender=Sender(
            name=sender.get("name"), phones=sender.get("phones", []), emails=sender.get("emails", [])
        ),
        interaction=timeline_view({**inter, "_id": doc.get("interaction_id") or doc["_id"]}),
        contact_id=doc.get("contact_id"),
        resolved_at=iso(doc.get("resolved_at")),
    )


def company_view(doc: dict[str, Any]) -> CompanyOut:
    return CompanyOut(
        id=doc["_id"],
        name=doc.get("name"),
        domain=doc.get("domain"),
        phones=doc.get("phones", []),
        emails=doc.get("emails", []),
        owner_id=doc.get("owner_id"),
        tags=doc.get("tags", []),
        custom=doc.get("custom") or {},
        created_at=iso(doc.get("created_at")),
        updated_at=iso(doc.get("updated_at")),
    )
