"""Reading conversations and their messages, as the caller may see them (assignee visibility:
admins everything, managers and viewers their own and unassigned ones unless the tenant lets
managers see all)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.common.access import must, read_filter, require_writer, write_filter
from services.connectors.conversations import store
from services.connectors.conversations.api import conversation_view, message_view
from shared.clock import as_utc
from shared.pagination import clamp_limit, decode_cursor, encode_cursor


async def list_conversations(host: Any, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Most recent activity first."""
    limit = clamp_limit(args.get("limit"))
    flt = read_filter(ctx, "assignee_id")
    for name in ("contact_id", "channel_id"):
        if args.get(name):
            flt[name] = args[name]
    if args.get("assignee_id"):
        wanted = args["assignee_id"]
        visible = flt.get("assignee_id")
        if visible is not None and wanted not in visible["$in"]:
            return {"items": [], "next_cursor": None}
        flt["assignee_id"] = wanted
    if args.get("unread") is True:
        flt["unread"] = {"$gt": 0}
    elif args.get("unread") is False:
        flt["unread"] = 0
    after = decode_cursor(args.get("cursor"))
    if after:
        last_at, last_id = after
        flt["$or"] = [
            {"last_message_at": {"$lt": as_utc_or_none(last_at)}},
            {"last_message_at": as_utc_or_none(last_at), "_id": {"$lt": last_id}},
        ]
    docs = await store.list_conversations(host.db, flt, limit)
    more = len(docs) > limit
    docs = docs[:limit]
    cursor = encode_cursor([docs[-1].get("last_message_at"), docs[-1]["_id"]]) if more and docs else None
    return {"items": [conversation_view(d) for d in docs], "next_cursor": cursor}


def as_utc_or_none(value: Any) -> Any:
    return as_utc(datetime.fromisoformat(value)) if isinstance(value, str) else value


async def _visible(host: Any, ctx: dict[str, Any], conv_id: str) -> dict[str, Any]:
    return must(
        await host.db.conversations.find_one({**read_filter(ctx, "assignee_id"), "_id": conv_id}),
        "conversation",
    )


async def list_messages(host: Any, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Oldest first."""
    conv = await _visible(host, ctx, args["conversation_id"])
    limit = clamp_limit(args.get("limit"))
    after = decode_cursor(args.get("cursor"))
    docs = await store.list_messages(host.db, conv["_id"], str(after[0]) if after else None, limit)
    more = len(docs) > limit
    docs = docs[:limit]
    cursor = encode_cursor([docs[-1]["_id"]]) if more and docs else None
    return {"items": [message_view(d) for d in docs], "next_cursor": cursor}


async def get_conversation(host: Any, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    return conversation_view(await _visible(host, ctx, args["conversation_id"]))


async def mark_read(host: Any, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """The caller has read the conversation: its unread count is 0."""
    require_writer(ctx)
    flt = {**write_filter(ctx, "assignee_id"), "_id": args["conversation_id"]}
    must(await host.db.conversations.find_one(flt), "conversation")
    await host.db.conversations.update_one(flt, {"$set": {"unread": 0}})
    return conversation_view(must(await host.db.conversations.find_one(flt), "conversation"))
