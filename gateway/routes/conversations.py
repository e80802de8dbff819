"""Conversations: the customer's messages on one channel thread, answered from the card on the
channel they wrote from. Served by the connectors service (which holds the channels' secrets and
sends through the outbox worker)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header

from gateway.deps import GW, Auth, Cursor, Limit
from services.connectors.api import (
    ConversationOut,
    ConversationPage,
    MessageOut,
    MessagePage,
    SendIn,
    StartIn,
)

router = APIRouter(prefix="/api/v1", tags=["conversations"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="One key, one message: a repeat (also after a restart) answers the same message and sends nothing.",
    ),
]


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    p: Auth,
    gw: GW,
    contact_id: str | None = None,
    assignee_id: str | None = None,
    unread: bool | None = None,
    channel_id: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Most recent activity first. `unread=true`: only those with unread inbound messages."""
    return await gw.call(
        "connectors",
        "list_conversations",
        p,
        contact_id=contact_id,
        assignee_id=assignee_id,
        unread=unread,
        channel_id=channel_id,
        limit=limit,
        cursor=cursor,
    )


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
async def get_conversation(conversation_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("connectors", "get_conversation", p, conversation_id=conversation_id)


@router.get("/conversations/{conversation_id}/messages", response_model=MessagePage)
async def list_messages(
    conversation_id: str, p: Auth, gw: GW, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """Oldest first."""
    return await gw.call(
        "connectors", "list_messages", p, conversation_id=conversation_id, limit=limit, cursor=cursor
    )


@router.post("/conversations/{conversation_id}/read", response_model=ConversationOut)
async def read_conversation(conversation_id: str, p: Auth, gw: GW) -> Any:
    """The caller has read the conversation: `unread` becomes 0 (answering does it too)."""
    return await gw.call("connectors", "read_conversation", p, conversation_id=conversation_id)


@router.post("/conversations/{conversation_id}/messages", response_model=MessageOut, status_code=202)
async def send_message(
    conversation_id: str, body: SendIn, p: Auth, gw: GW, idempotency_key: IdempotencyKey = None
) -> Any:
    """Queued (`status: queued`) and sent by the outbox worker, once; `message.sent` and later
    `message.status_changed` follow. Email answers keep the thread (In-Reply-To, References,
    `Re:` subject unless `subject` is given)."""
    p.require("admin", "manager")
    return await gw.call(
        "connectors",
        "send_message",
        p,
        conversation_id=conversation_id,
        idempotency_key=idempotency_key,
        **body.model_dump(),
    )


@router.post("/contacts/{contact_id}/messages", response_model=MessageOut, status_code=202)
async def start_conversation(
    contact_id: str, body: StartIn, p: Auth, gw: GW, idempotency_key: IdempotencyKey = None
) -> Any:
    """Start (or continue) the contact's conversation on `channel_id`, addressed to the contact's
    identity on that channel (Telegram account, email, WhatsApp number, VK user); 422 naming
    `channel_id` when the contact has none there."""
    p.require("admin", "manager")
    contact = await gw.call("contacts", "get_contact", p, contact_id=contact_id)
    return await gw.call(
        "connectors",
        "start_conversation",
        p,
        contact=contact,
        idempotency_key=idempotency_key,
        **body.model_dump(),
    )
