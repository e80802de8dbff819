"""A manager's answer: ``send_message`` (on a conversation) and ``start_conversation`` (from the
card). The message (``queued``) and its send job are written in one transaction, bound to the
caller's Idempotency-Key when there is one, so one key is one message and one send, whatever
is retried; the outbox worker (:mod:`services.connectors.sending`) does the provider call."""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from services.common.access import must, require_writer, tenant_of, write_filter
from services.connectors.conversations import store
from services.connectors.conversations.api import message_view
from services.connectors.conversations.domain.messages import reply_subject
from services.connectors.conversations.domain.threads import NoAddress, message_id_for, new_thread
from services.connectors.senders import get_sender
from shared.clock import new_id
from shared.errors import ValidationFailed
from shared.mongo import UnitOfWork


def _mailbox(channel: dict[str, Any]) -> str:
    config = channel.get("config") or {}
    return str(config.get("from_address") or config.get("smtp_username") or config.get("username") or "")


async def _sending_channel(host: Any, tenant: str, channel_id: str, field: str) -> dict[str, Any]:
    channel = await host.channel(channel_id, fresh=True)
    if channel is None or channel.get("tenant_id") != tenant:
        raise ValidationFailed({field: "is not a channel of this tenant"})
    if not channel.get("active", True):
        raise ValidationFailed({field: "this channel is switched off"})
    if get_sender(channel["kind"]) is None:
        raise ValidationFailed({field: f"a {channel['kind']} channel cannot send messages"})
    return channel


async def send_message(host: Any, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    require_writer(ctx)
    flt = {**write_filter(ctx, "assignee_id"), "_id": args["conversation_id"]}
    conv = must(await host.db.conversations.find_one(flt), "conversation")
    channel = await _sending_channel(host, tenant_of(ctx), conv["channel_id"], "channel_id")
    return await _queue(host, ctx, args, conv, channel)


def _client_key(tenant: str, ctx: dict[str, Any], key: str) -> str:
    return f"{tenant}:{ctx.get('user_id') or ''}:{key}"


async def start_conversation(host: Any, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """``args["contact"]``: the contact as the contacts service shows it to the caller."""
    require_writer(ctx)
    tenant = tenant_of(ctx)
    contact = args["contact"]
    channel = await _sending_channel(host, tenant, args["channel_id"], "channel_id")
    if args.get("idempotency_key"):  # a repeat: nothing new, not even an (email) thread
        known = await host.db.message_keys.find_one(
            {"_id": _client_key(tenant, ctx, args["idempotency_key"])}
        )
        if known is not None:
            return message_view(
                must(await host.db.messages.find_one({"_id": known["message_id"]}), "message")
            )
    message_id = new_id()
    try:
        thread = new_thread(
            channel["kind"],
            contact,
            subject=args.get("subject"),
            first_message_id=message_id_for(message_id, _mailbox(channel)),
        )
    except NoAddress as exc:
        raise ValidationFailed({"channel_id": str(exc)}) from exc
    conv = await host.db.conversations.find_one(
        {"tenant_id": tenant, "channel_id": channel["_id"], "thread_key": thread.key}
    )
    if conv is None:
        conv = {
            "_id": new_id(),
            "tenant_id": tenant,
            "contact_id": contact["id"],
            "channel_id": channel["_id"],
            "kind": channel["kind"],
            "thread_key": thread.key,
            "address": thread.address,
            "assignee_id": contact.get("owner_id") or ctx.get("user_id"),
            "unread": 0,
            "last_message_at": None,
            "awaiting_reply_since": None,
            "created_at": host.clock.now(),
        }
        try:
            await host.db.conversations.insert_one(conv)
        except DuplicateKeyError:  # started at the same moment by another request
            conv = must(
                await host.db.conversations.find_one(
                    {"tenant_id": tenant, "channel_id": channel["_id"], "thread_key": thread.key}
                ),
                "conversation",
            )
    return await _queue(host, ctx, args, conv, channel, message_id=message_id)


async def _queue(
    host: Any,
    ctx: dict[str, Any],
    args: dict[str, Any],
    conv: dict[str, Any],
    channel: dict[str, Any],
    *,
    message_id: str | None = None,
) -> dict[str, Any]:
    message_id = message_id or new_id()
    address = dict(conv.get("address") or {})
    subject = None
    if channel["kind"] == "imap":
        subject = reply_subject(address.get("subject"), args.get("subject"))
    attachments = [dict(a) for a in args.get("attachments") or []]
    client_key = args.get("idempotency_key")

    async def unit(uow: UnitOfWork) -> dict[str, Any]:
        if client_key:
            known = await store.claim_client_key(
                uow, _client_key(conv["tenant_id"], ctx, client_key), message_id
            )
            if known is not None:
                return must(await store.message(uow, known), "message")
        message = {
            "_id": message_id,
            "tenant_id": conv["tenant_id"],
            "conversation_id": conv["_id"],
            "contact_id": conv.get("contact_id"),
            "channel_id": conv["channel_id"],
            "direction": "out",
            "text": args["text"],
            "subject": subject,
            "attachments": attachments,
            "status": "queued",
            "provider_message_id": None,
            "author_id": ctx.get("user_id"),
            "created_at": uow.now,
        }
        await store.insert_message(uow, message)
        await store.insert_send(
            uow,
            {
                "_id": message_id,
                "tenant_id": conv["tenant_id"],
                "channel_id": conv["channel_id"],
                "conversation_id": conv["_id"],
                "kind": channel["kind"],
                "thread_key": conv["thread_key"],
                "address": address,
                "text": args["text"],
                "subject": subject,
                "attachments": attachments,
                "state": "queued",
                "attempts": 0,
                "next_at": uow.now,
                "created_at": uow.now,
            },
        )
        return message

    message = await host.store.atomic(unit)
    host.sending.wake()
    return message_view(message)
