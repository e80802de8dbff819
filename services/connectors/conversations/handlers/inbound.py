"""``interaction.recorded`` of a message or an email on a thread → its conversation and message.

An inbound message opens the thread's conversation (assigned to the contact's owner, else the
channel's) or continues it: unread + 1, awaiting an answer. An outbound one is our answer coming
back (the send's own timeline item, the copy the mail server filed in Sent): it is recognised by
the provider's message id and not added twice; one we do not know (written from a mail client)
is added as sent.
"""

from __future__ import annotations

from typing import Any

from services.connectors.conversations import store
from services.connectors.conversations.domain.conversation import on_answer_sent, on_inbound
from services.connectors.conversations.domain.messages import event_payload, inbound_text, provider_id
from shared.clock import as_utc, new_id
from shared.events import Envelope, InteractionRecorded
from shared.mongo import UnitOfWork

CONSUMER = "conversations"


async def on_recorded(host: Any, env: Envelope) -> None:
    rec: InteractionRecorded = env.parsed()
    thread = (rec.data or {}).get("thread")
    if rec.kind not in ("message", "email") or not isinstance(thread, dict) or not rec.channel_id:
        return
    await host.store.consume(env, CONSUMER, lambda uow: record(uow, env, rec, thread))


async def record(uow: UnitOfWork, env: Envelope, rec: InteractionRecorded, thread: dict[str, Any]) -> None:
    tenant = env.tenant_id
    channel_id = str(rec.channel_id)
    key = str(thread.get("key") or "")
    if not key:
        return
    conv = await store.thread(uow, tenant, channel_id, key)
    if conv is None:
        conv = {
            "_id": new_id(),
            "tenant_id": tenant,
            "contact_id": rec.contact_id,
            "channel_id": channel_id,
            "kind": rec.channel_kind or "",
            "thread_key": key,
            "address": dict(thread.get("address") or {}),
            "assignee_id": rec.owner_id or rec.channel_owner_id,
            "unread": 0,
            "last_message_at": None,
            "awaiting_reply_since": None,
            "created_at": uow.now,
        }
        await store.insert_conversation(uow, conv)
    pid = provider_id(rec.data)
    at = as_utc(rec.occurred_at)
    fields: dict[str, Any] = {"contact_id": rec.contact_id}
    if thread.get("address") and rec.direction == "in":
        fields["address"] = dict(thread["address"])  # answer the latest message of the thread
    if rec.direction == "out" and pid and await store.message_by_provider_id(uow, conv["_id"], pid):
        return  # our own answer, already a message of this conversation
    message: dict[str, Any] = {
        "_id": new_id(),
        "tenant_id": tenant,
        "conversation_id": conv["_id"],
        "contact_id": rec.contact_id,
        "channel_id": channel_id,
        "direction": rec.direction,
        "text": inbound_text(rec.data),
        "subject": rec.data.get("subject") if rec.kind == "email" else None,
        "attachments": [a for a in rec.data.get("attachments") or [] if isinstance(a, dict)],
        "provider_message_id": pid,
        "interaction_id": rec.interaction_id,
        "created_at": uow.now,
    }
    counters = store.counters_of(conv)
    if rec.direction == "in":
        message.update(status="received", received_at=at)
        counters = on_inbound(counters, at)
        event, waited = "message.received", None
    else:
        message.update(status="sent", sent_at=at)
        counters, waited = on_answer_sent(counters, at)
        event = "message.sent"
    await store.insert_message(uow, message)
    fields.update(store.counter_fields(counters))
    await store.update_conversation(uow, conv["_id"], fields)
    conv.update(fields)
    uow.emit(
        event,
        tenant,
        event_payload(message, conv, at, awaiting_reply_since=waited),
        caused_by=env,
        idempotency_key=f"{event}:{message['_id']}",
    )
