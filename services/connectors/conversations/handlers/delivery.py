"""What became of a message we sent: the send's result (from the outbox worker) and the
provider's later delivery reports (``delivery.status_reported`` from a hook), each moving the
message forward once and announcing it (``message.sent``, ``message.status_changed``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.connectors.conversations import store
from services.connectors.conversations.domain.conversation import next_status, on_answer_sent
from services.connectors.conversations.domain.messages import event_payload, identity_of
from shared.events import DeliveryStatusReported, Envelope
from shared.mongo import UnitOfWork

CONSUMER = "conversations.status"


async def record_sent(
    uow: UnitOfWork, job: dict[str, Any], provider_message_id: str, status: str, at: datetime
) -> None:
    """The provider took the message: the message is ``sent`` (or further), the customer has
    their answer, and the answer goes on the contact's timeline (``interaction.captured``, keyed
    like the copy the channel itself may report later, so it is one item)."""
    message = await store.update_message(
        uow,
        job["_id"],
        {"status": status, "provider_message_id": provider_message_id, "sent_at": at, "error": None},
    )
    conv = await store.conversation(uow, {"_id": job["conversation_id"]})
    if message is None or conv is None:
        return  # erased meanwhile
    counters, waited = on_answer_sent(store.counters_of(conv), at)
    await store.update_conversation(uow, conv["_id"], store.counter_fields(counters))
    conv.update(store.counter_fields(counters))
    uow.emit(
        "message.sent",
        job["tenant_id"],
        event_payload(message, conv, at, awaiting_reply_since=waited),
        idempotency_key=f"message.sent:{message['_id']}",
    )
    item = _timeline_item(job, conv, message, provider_message_id, at)
    if item["contact_id"] or any(item["sender"].values()):  # on the card, else by the identity
        uow.emit(
            "interaction.captured",
            job["tenant_id"],
            item,
            idempotency_key=_timeline_key(job, provider_message_id),
        )


def _timeline_key(job: dict[str, Any], provider_message_id: str) -> str:
    if job["kind"] == "imap":
        return f"imap:{job['channel_id']}:{provider_message_id}"  # what the Sent copy is keyed by
    return f"{job['kind']}:out:{job['_id']}"


def _timeline_item(
    job: dict[str, Any], conv: dict[str, Any], message: dict[str, Any], provider_id: str, at: datetime
) -> dict[str, Any]:
    identity = identity_of(job["kind"], job.get("address") or {})
    email = job["kind"] == "imap"
    data: dict[str, Any] = {
        "text": message.get("text"),
        "thread": {"key": job["thread_key"], "address": job.get("address") or {}},
        "provider_message_id": provider_id,
        "conversation_id": conv["_id"],
        "crm_message_id": message["_id"],
        "author_id": message.get("author_id"),
    }
    if email:
        data.update(
            subject=message.get("subject"),
            message_id=provider_id,
            thread_id=job["thread_key"].removeprefix("mail:"),
            to=list((job.get("address") or {}).get("to") or []),
            body_text=message.get("text"),
        )
    text = str(message.get("text") or "")
    return {
        "channel_id": job["channel_id"],
        "channel_kind": job["kind"],
        "intake": "auto",
        "kind": "email" if email else "message",
        "direction": "out",
        "occurred_at": at,
        "sender": {
            "phones": identity.get("phones", []),
            "emails": identity.get("emails", []),
            "handles": identity.get("handles", []),
        },
        "summary": (text[:200] + "…") if len(text) > 200 else text,
        "data": data,
        "subject_key": _timeline_key(job, provider_id) if email else None,
        "contact_id": conv.get("contact_id"),
    }


async def record_failed(uow: UnitOfWork, job: dict[str, Any], reason: str, at: datetime) -> None:
    message = await store.message(uow, job["_id"])
    conv = await store.conversation(uow, {"_id": job["conversation_id"]})
    if message is None or conv is None or message["status"] == "failed":
        return
    message = await store.update_message(uow, job["_id"], {"status": "failed", "error": reason[:500]})
    assert message is not None
    uow.emit(
        "message.status_changed",
        job["tenant_id"],
        event_payload(message, conv, at),
        idempotency_key=f"message.status_changed:{message['_id']}:failed",
    )


async def on_status_reported(host: Any, env: Envelope) -> None:
    await host.store.consume(env, CONSUMER, lambda uow: apply_status(uow, env))


class StatusBeforeSend(Exception):
    """A delivery report for a message whose send is not recorded yet: retried later."""


async def apply_status(uow: UnitOfWork, env: Envelope) -> None:
    report: DeliveryStatusReported = env.parsed()
    message = await uow.db.messages.find_one(
        {
            "tenant_id": env.tenant_id,
            "channel_id": report.channel_id,
            "provider_message_id": report.provider_message_id,
            "direction": "out",
        },
        session=uow.session,
    )
    if message is None:
        pending = await uow.db.sends.find_one(
            {
                "tenant_id": env.tenant_id,
                "channel_id": report.channel_id,
                "state": {"$in": ["queued", "sending"]},
            },
            {"_id": 1},
            session=uow.session,
        )
        if pending is not None:
            raise StatusBeforeSend(report.provider_message_id[:8])
        return  # not one of ours (sent from the provider's own app)
    status = next_status(message["status"], report.status)
    if status is None:
        return
    fields: dict[str, Any] = {"status": status, f"{status}_at": report.occurred_at}
    if status == "failed":
        fields["error"] = (report.error or "the provider reported a failure")[:500]
    message = await store.update_message(uow, message["_id"], fields)
    conv = await store.conversation(uow, {"_id": message["conversation_id"]}) if message else None
    if message is None or conv is None:
        return
    uow.emit(
        "message.status_changed",
        env.tenant_id,
        event_payload(message, conv, report.occurred_at),
        caused_by=env,
        idempotency_key=f"message.status_changed:{message['_id']}:{status}",
    )
