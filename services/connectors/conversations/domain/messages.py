"""Building message documents and events from what arrives (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.clock import iso

TEXT_LIMIT = 20_000


def inbound_text(data: Mapping[str, Any]) -> str | None:
    """The message's text as the provider gave it (``text``; an email's ``body_text``)."""
    for key in ("text", "body_text"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value[:TEXT_LIMIT]
    return None


def provider_id(data: Mapping[str, Any]) -> str | None:
    value = data.get("provider_message_id") or data.get("message_id")
    return str(value) if value not in (None, "") else None


def identity_of(kind: str, address: Mapping[str, Any]) -> dict[str, list[str]]:
    """The customer's identity on a thread (as the contacts service knows it): what our answer's
    timeline item is filed by."""
    if kind == "telegram" and address.get("chat_id") is not None:
        return {"handles": [f"telegram:{address['chat_id']}"]}
    if kind == "vk" and address.get("peer_id") is not None:
        return {"handles": [f"vk:{address['peer_id']}"]}
    if kind == "whatsapp" and address.get("to"):
        return {"phones": [f"+{str(address['to']).lstrip('+')}"]}
    if kind == "imap" and address.get("to"):
        return {"emails": [str(a) for a in address["to"]]}
    handles = [str(h) for h in address.get("handles") or []]
    return {"handles": handles} if handles else {}


def reply_subject(thread_subject: str | None, explicit: str | None) -> str:
    if explicit:
        return explicit
    subject = (thread_subject or "").strip()
    if not subject:
        return ""
    return subject if subject.lower().startswith(("re:", "ответ:")) else f"Re: {subject}"


def event_payload(
    message: Mapping[str, Any],
    conversation: Mapping[str, Any],
    occurred_at: datetime,
    *,
    awaiting_reply_since: datetime | None = None,
) -> dict[str, Any]:
    """A ``message.*`` payload: ids, status, times; never the text or the address."""
    return {
        "message_id": message["_id"],
        "conversation_id": conversation["_id"],
        "contact_id": conversation.get("contact_id"),
        "channel_id": conversation["channel_id"],
        "channel_kind": conversation["kind"],
        "direction": message["direction"],
        "status": message["status"],
        "assignee_id": conversation.get("assignee_id"),
        "provider_message_id": message.get("provider_message_id"),
        "error": message.get("error"),
        "occurred_at": iso(occurred_at),
        "awaiting_reply_since": iso(awaiting_reply_since),
    }
