"""The typed contract of conversations the gateway imports: what it sends and what it answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.clock import iso

Status = Literal["received", "queued", "sent", "delivered", "read", "failed"]


class SendIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "Добрый день! Счёт во вложении."}]}
    )
    text: str = Field(min_length=1, max_length=4096)
    subject: str | None = Field(
        default=None, max_length=998, description="Email only; default: Re: <thread>."
    )


class StartIn(SendIn):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"channel_id": "01hx...", "text": "Здравствуйте!", "subject": "Ваш заказ"}]
        },
    )
    channel_id: str = Field(min_length=1, max_length=64)


class ConversationOut(BaseModel):
    id: str
    contact_id: str | None
    channel_id: str
    kind: str
    assignee_id: str | None
    unread: int
    last_message_at: str | None
    awaiting_reply_since: str | None


class MessageOut(BaseModel):
    id: str
    conversation_id: str
    direction: Literal["in", "out"]
    text: str | None
    subject: str | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list)
    status: Status
    error: str | None = None
    provider_message_id: str | None
    sent_at: str | None = None
    received_at: str | None = None
    author_id: str | None = None


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None = None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None = None


def conversation_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "contact_id": doc.get("contact_id"),
        "channel_id": doc["channel_id"],
        "kind": doc["kind"],
        "assignee_id": doc.get("assignee_id"),
        "unread": int(doc.get("unread") or 0),
        "last_message_at": iso(doc.get("last_message_at")),
        "awaiting_reply_since": iso(doc.get("awaiting_reply_since")),
    }


def message_view(doc: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": doc["_id"],
        "conversation_id": doc["conversation_id"],
        "direction": doc["direction"],
        "text": doc.get("text"),
        "subject": doc.get("subject"),
        "attachments": list(doc.get("attachments") or []),
        "status": doc["status"],
        "error": doc.get("error"),
        "provider_message_id": doc.get("provider_message_id"),
        "author_id": doc.get("author_id"),
    }
    if doc["direction"] == "in":
        out["received_at"] = iso(doc.get("received_at"))
    else:
        out["sent_at"] = iso(doc.get("sent_at"))
    return out
