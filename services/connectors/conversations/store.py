"""Every database call of conversations (collections ``conversations``, ``messages`` and the send
jobs ``sends`` in the connectors database). Writes take the caller's unit of work, so a message,
its conversation's counters, its send job and the events announcing them commit together."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from services.connectors.conversations.domain.conversation import Counters
from shared.clock import as_utc
from shared.mongo import UnitOfWork

INDEXES: dict[str, list[IndexModel]] = {
    "conversations": [
        IndexModel(
            [("tenant_id", ASCENDING), ("channel_id", ASCENDING), ("thread_key", ASCENDING)], unique=True
        ),
        IndexModel([("tenant_id", ASCENDING), ("last_message_at", DESCENDING)]),
        IndexModel([("tenant_id", ASCENDING), ("contact_id", ASCENDING)]),
    ],
    "messages": [
        IndexModel([("conversation_id", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("conversation_id", ASCENDING), ("provider_message_id", ASCENDING)]),
        IndexModel([("tenant_id", ASCENDING), ("contact_id", ASCENDING)]),
    ],
    "sends": [
        IndexModel([("state", ASCENDING), ("next_at", ASCENDING)]),
        IndexModel([("channel_id", ASCENDING)]),
        IndexModel([("conversation_id", ASCENDING)]),
        IndexModel([("done_at", ASCENDING)], expireAfterSeconds=30 * 24 * 3600),  # finished jobs
    ],
    "message_keys": [IndexModel([("at", ASCENDING)], expireAfterSeconds=30 * 24 * 3600)],
}


def counters_of(doc: dict[str, Any]) -> Counters:
    def at(v: Any) -> datetime | None:
        return as_utc(v) if v else None

    return Counters(
        unread=int(doc.get("unread") or 0),
        last_message_at=at(doc.get("last_message_at")),
        awaiting_reply_since=at(doc.get("awaiting_reply_since")),
    )


def counter_fields(c: Counters) -> dict[str, Any]:
    return {
        "unread": c.unread,
        "last_message_at": c.last_message_at,
        "awaiting_reply_since": c.awaiting_reply_since,
    }


async def thread(uow: UnitOfWork, tenant: str, channel_id: str, key: str) -> dict[str, Any] | None:
    return await uow.db.conversations.find_one(
        {"tenant_id": tenant, "channel_id": channel_id, "thread_key": key}, session=uow.session
    )


async def insert_conversation(uow: UnitOfWork, doc: dict[str, Any]) -> None:
    await uow.db.conversations.insert_one(doc, session=uow.session)


async def update_conversation(uow: UnitOfWork, conv_id: str, fields: dict[str, Any]) -> None:
    await uow.db.conversations.update_one({"_id": conv_id}, {"$set": fields}, session=uow.session)


async def conversation(uow: UnitOfWork, flt: dict[str, Any]) -> dict[str, Any] | None:
    return await uow.db.conversations.find_one(flt, session=uow.session)


async def message(uow: UnitOfWork, message_id: str) -> dict[str, Any] | None:
    return await uow.db.messages.find_one({"_id": message_id}, session=uow.session)


async def message_by_provider_id(uow: UnitOfWork, conv_id: str, provider_id: str) -> dict[str, Any] | None:
    return await uow.db.messages.find_one(
        {"conversation_id": conv_id, "provider_message_id": provider_id}, session=uow.session
    )


async def insert_message(uow: UnitOfWork, doc: dict[str, Any]) -> None:
    await uow.db.messages.insert_one(doc, session=uow.session)


async def update_message(uow: UnitOfWork, message_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    return await uow.db.messages.find_one_and_update(
        {"_id": message_id}, {"$set": fields}, session=uow.session, return_document=ReturnDocument.AFTER
    )


async def claim_client_key(uow: UnitOfWork, key: str, message_id: str) -> str | None:
    """Bind a caller's Idempotency-Key to ``message_id``; the message it already names, if any."""
    known = await uow.db.message_keys.find_one({"_id": key}, session=uow.session)
    if known is not None:
        return str(known["message_id"])
    await uow.db.message_keys.insert_one(
        {"_id": key, "message_id": message_id, "at": uow.now}, session=uow.session
    )
    return None


async def insert_send(uow: UnitOfWork, doc: dict[str, Any]) -> None:
    await uow.db.sends.insert_one(doc, session=uow.session)


async def forget_contact(uow: UnitOfWork, tenant: str, contact_id: str) -> None:
    """An erased person's conversations, messages and pending sends."""
    convs = await uow.db.conversations.find(
        {"tenant_id": tenant, "contact_id": contact_id}, {"_id": 1}, session=uow.session
    ).to_list(None)
    ids = [c["_id"] for c in convs]
    if ids:
        await uow.db.sends.delete_many({"conversation_id": {"$in": ids}}, session=uow.session)
        await uow.db.messages.delete_many({"conversation_id": {"$in": ids}}, session=uow.session)
        await uow.db.conversations.delete_many({"_id": {"$in": ids}}, session=uow.session)


async def move_contact(uow: UnitOfWork, tenant: str, old: str, new: str) -> None:
    for coll in (uow.db.conversations, uow.db.messages):
        await coll.update_many(
            {"tenant_id": tenant, "contact_id": old}, {"$set": {"contact_id": new}}, session=uow.session
        )


async def list_conversations(db: Any, flt: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    cursor = db.conversations.find(flt).sort([("last_message_at", DESCENDING), ("_id", DESCENDING)])
    return await cursor.limit(limit + 1).to_list(limit + 1)


async def list_messages(db: Any, conv_id: str, after: str | None, limit: int) -> list[dict[str, Any]]:
    flt: dict[str, Any] = {"conversation_id": conv_id}
    if after:
        flt["_id"] = {"$gt": after}
    return await db.messages.find(flt).sort("_id", ASCENDING).limit(limit + 1).to_list(limit + 1)
