"""The inbox ("Unsorted"): items whose sender matched no card, read and resolved by a person:
accept (a new card, or the one that matches by now), link to a card, or reject as spam."""

from __future__ import annotations

from typing import Any

from services.common.access import must, read_filter, write_filter
from services.contacts import api
from services.contacts.domain.cards import (
    IdentityRace,
    inbox_title,
    learn_sender,
    new_contact,
    owner_for,
    source_of,
)
from services.contacts.domain.timeline import TimelineItem
from services.contacts.domain.views import contact_view, inbox_view
from services.contacts.handlers.access import writable
from services.contacts.handlers.capture import create_contact
from services.contacts.store import ContactsStore, ContactsTx
from shared.clock import as_utc
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.events import InboxItemAccepted, InboxItemLinked, InboxItemRejected, InteractionRecorded
from shared.pagination import clamp_limit, decode_cursor, page

Ctx = dict[str, Any]
RESOLVED_MEANWHILE = "This inbox item was resolved meanwhile."


def _readable(ctx: Ctx) -> dict[str, Any]:
    return read_filter(ctx, owner_field="channel_owner_id")


async def list_inbox(store: ContactsStore, ctx: Ctx, req: api.ListInbox) -> dict[str, Any]:
    limit = clamp_limit(req.limit)
    flt = _readable(ctx)
    if req.status:
        flt["status"] = req.status
    after = decode_cursor(req.cursor)
    if after:
        flt["_id"] = {"$lt": after[0]}
    docs = await store.inbox_page(flt, limit)
    return page([inbox_view(d) for d in docs], limit, lambda it: [it.id])


async def get_inbox_item(store: ContactsStore, ctx: Ctx, req: api.GetInboxItem) -> api.InboxItemOut:
    return inbox_view(must(await store.inbox_one(_readable(ctx), req.item_id), "inbox item"))


async def _pending_item(store: ContactsStore, ctx: Ctx, item_id: str) -> dict[str, Any]:
    flt = _readable(ctx)
    write_filter(ctx)  # 403 for viewers before the lookup
    item = must(await store.inbox_one(flt, item_id), "inbox item")
    if item["status"] != "pending":
        raise Conflict(f"This inbox item is already {item['status']}.")
    return item


async def _attach_items(
    tx: ContactsTx,
    items: list[dict[str, Any]],
    contact: dict[str, Any],
    status: str,
    *,
    new: bool,
    by: str | None,
) -> None:
    """Put each item's interaction on the contact's timeline and close the item (the first with
    ``status``, the sender's others as ``linked``)."""
    tenant = contact["tenant_id"]
    for n, item in enumerate(items):
        inter = item["interaction"]
        existing = await tx.timeline_item(tenant, inter["subject_key"])
        if existing is None:
            doc = TimelineItem.new(
                tenant_id=tenant,
                contact_id=contact["_id"],
                kind=inter["kind"],
                direction=inter["direction"],
                occurred_at=inter["occurred_at"],
                now=tx.now,
                channel_id=inter.get("channel_id"),
                summary=inter.get("summary"),
                data=inter.get("data") or {},
                subject_key=inter["subject_key"],
                event_keys=inter.get("event_keys", []),
            ).doc()
            await tx.insert_timeline(doc)
            item_id = doc["_id"]
        else:
            item_id = existing["_id"]
        await tx.resolve_pending(
            item["_id"],
            {
                "status": status if n == 0 else "linked",
                "contact_id": contact["_id"],
                "interaction_id": item_id,
                "resolved_at": tx.now,
                "resolved_by": by,
            },
        )
        tx.emit(
            "interaction.recorded",
            tenant,
            InteractionRecorded(
                interaction_id=item_id,
                contact_id=contact["_id"],
                owner_id=contact.get("owner_id"),
                channel_id=item.get("channel_id"),
                channel_kind=item.get("channel_kind"),
                channel_owner_id=item.get("channel_owner_id"),
                kind=inter["kind"],
                direction=inter["direction"],
                occurred_at=inter["occurred_at"],
                data=inter.get("data") or {},
                is_new_contact=new and n == 0,
                first_of_subject=existing is None,
            ),
            idempotency_key=f"inbox-recorded:{item['_id']}",
        )
    last = max(as_utc(i["interaction"]["occurred_at"]) for i in items)
    await tx.touch_contact(tenant, contact["_id"], last)


async def accept_inbox_item(
    store: ContactsStore, ctx: Ctx, req: api.AcceptInboxItem
) -> api.AcceptedInboxItem:
    """Create the contact from the sender (or use the one that matches by now), put the
    interaction on its timeline, link the sender's other pending items, and announce
    ``inbox.item_accepted`` so that deals opens a deal when a pipeline applies."""
    item = await _pending_item(store, ctx, req.item_id)
    errors: dict[str, str] = {}
    owner = owner_for(ctx, req.owner_id or item.get("channel_owner_id"), errors)
    if errors:
        raise ValidationFailed(errors)
    tenant = item["tenant_id"]
    sender = item.get("sender") or {}
    phones, emails = list(sender.get("phones", [])), list(sender.get("emails", []))

    async def unit(tx: ContactsTx) -> dict[str, Any]:
        fresh = await tx.pending_item(item["_id"])
        if fresh is None:
            raise Conflict(RESOLVED_MEANWHILE)
        candidates = await tx.find_candidates(tenant, phones, emails)
        new = not candidates
        if candidates:
            contact = candidates[0]
        else:
            doc = new_contact(
                tenant,
                tx.now,
                name=sender.get("name"),
                phones=phones,
                emails=emails,
                owner_id=owner,
                source=source_of(item.get("channel_id"), item.get("channel_kind"), item.get("utm")),
                extra={
                    "raw_phones": list(sender.get("raw_phones", [])),
                    "handles": list(sender.get("handles", [])),
                },
            )
            contact = await create_contact(
                tx,
                tenant,
                doc,
                claim=True,
                channel_owner_id=item.get("channel_owner_id"),
                interaction_kind=item["interaction"]["kind"],
            )
        others = await tx.pending_from(
            tenant, contact.get("phones", []), contact.get("emails", []), fresh["_id"]
        )
        await _attach_items(tx, [fresh, *others], contact, "accepted", new=new, by=ctx.get("user_id"))
        tx.emit(
            "inbox.item_accepted",
            tenant,
            InboxItemAccepted(
                item_id=fresh["_id"],
                contact_id=contact["_id"],
                pipeline_id=req.pipeline_id,
                owner_id=contact.get("owner_id") or owner,
                title=inbox_title(contact, phones, emails),
            ),
            idempotency_key=f"accept:{fresh['_id']}",
        )
        return contact

    contact = await store.atomic(unit, retry_on=(IdentityRace,), attempts=3)
    view = await get_inbox_item(store, ctx, api.GetInboxItem(item_id=item["_id"]))
    return api.AcceptedInboxItem(**view.model_dump(), contact=contact_view(contact))


async def link_inbox_item(store: ContactsStore, ctx: Ctx, req: api.LinkInboxItem) -> api.InboxItemOut:
    """Attach the item (and the sender's other pending items) to an existing contact, which
    learns the sender's phones and emails so the next touch resolves by itself."""
    item = await _pending_item(store, ctx, req.item_id)
    if not req.contact_id:
        raise ValidationFailed({"contact_id": "is required"})
    try:
        contact = await writable(store, ctx, req.contact_id)
    except NotFound as exc:
        raise ValidationFailed({"contact_id": "is not a contact you may change"}) from exc
    sender = item.get("sender") or {}
    tenant = item["tenant_id"]

    async def unit(tx: ContactsTx) -> None:
        fresh = await tx.pending_item(item["_id"])
        if fresh is None:
            raise Conflict(RESOLVED_MEANWHILE)
        learnt = learn_sender(contact, sender)
        await tx.set_contact(tenant, contact["_id"], {**learnt, "updated_at": tx.now})
        contact.update(learnt)
        others = await tx.pending_from(tenant, contact["phones"], contact["emails"], fresh["_id"])
        await _attach_items(tx, [fresh, *others], contact, "linked", new=False, by=ctx.get("user_id"))
        tx.emit(
            "inbox.item_linked",
            tenant,
            InboxItemLinked(item_id=fresh["_id"], contact_id=contact["_id"]),
            idempotency_key=f"link:{fresh['_id']}",
        )

    await store.atomic(unit)
    return await get_inbox_item(store, ctx, api.GetInboxItem(item_id=item["_id"]))


async def reject_inbox_item(store: ContactsStore, ctx: Ctx, req: api.RejectInboxItem) -> api.InboxItemOut:
    """Spam: the item is kept for audit and never reaches a card."""
    item = await _pending_item(store, ctx, req.item_id)

    async def unit(tx: ContactsTx) -> None:
        done = await tx.resolve_pending(
            item["_id"], {"status": "rejected", "resolved_at": tx.now, "resolved_by": ctx.get("user_id")}
        )
        if not done:
            raise Conflict(RESOLVED_MEANWHILE)
        tx.emit(
            "inbox.item_rejected",
            item["tenant_id"],
            InboxItemRejected(
                item_id=item["_id"], channel_id=item.get("channel_id"), kind=item["interaction"]["kind"]
            ),
            idempotency_key=f"reject:{item['_id']}",
        )

    await store.atomic(unit)
    return await get_inbox_item(store, ctx, api.GetInboxItem(item_id=item["_id"]))
