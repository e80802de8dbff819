"""Duplicates: the cards that may be the same person, and merging two into one."""

from __future__ import annotations

from typing import Any

from services.common.access import read_filter
from services.contacts import api
from services.contacts.domain.access import allowed
from services.contacts.domain.cards import PERSON_CLEARED, merge_cards, name_key
from services.contacts.domain.views import contact_view
from services.contacts.handlers.access import visible, writable
from services.contacts.store import ContactsStore, ContactsTx
from shared.errors import ValidationFailed
from shared.events import ContactMerged

Ctx = dict[str, Any]


async def duplicates(store: ContactsStore, ctx: Ctx, req: api.FindDuplicates) -> dict[str, Any]:
    """Contacts that may be the same person: a shared phone or email, the same name, or recorded
    as a possible duplicate when a capture matched several. Each with its ``reasons``."""
    contact = await visible(store, ctx, req.contact_id)
    rf = read_filter(ctx)
    tenant = rf["tenant_id"]
    reasons: dict[str, set[str]] = {}
    found: dict[str, dict[str, Any]] = {}

    async def add(flt: dict[str, Any], reason: str) -> None:
        for doc in await store.contacts_where(tenant, flt):
            if doc["_id"] == contact["_id"] or doc.get("state") != "active" or not allowed(rf, doc):
                continue
            found[doc["_id"]] = doc
            reasons.setdefault(doc["_id"], set()).add(reason)

    if contact.get("phones"):
        await add({"phones": {"$in": contact["phones"]}}, "phone")
    if contact.get("emails"):
        await add({"emails": {"$in": contact["emails"]}}, "email")
    key = contact.get("name_key") or name_key(contact.get("name"))
    if key:
        await add({"name_key": key}, "name")
    recorded = await store.recorded_duplicates(contact["tenant_id"], contact["_id"])
    others = {i for r in recorded for i in r["ids"] if i != contact["_id"] and i not in found}
    if others:
        await add({"_id": {"$in": sorted(others)}}, "captured")
    items = [
        api.DuplicateOut(**contact_view(d).model_dump(), reasons=sorted(reasons[d["_id"]]))  # type: ignore[arg-type]
        for d in sorted(found.values(), key=lambda d: d["_id"], reverse=True)
    ]
    return {"items": items, "next_cursor": None}


async def merge_contacts(store: ContactsStore, ctx: Ctx, req: api.MergeContacts) -> api.ContactOut:
    """``contact_id`` survives with both histories; ``other_id`` becomes a pointer to it."""
    survivor = await writable(store, ctx, req.contact_id)
    if not req.other_id:
        raise ValidationFailed({"other_id": "is required"})
    other = await writable(store, ctx, req.other_id)
    if other["_id"] == survivor["_id"]:
        raise ValidationFailed({"other_id": "is this contact (or was merged into it)"})
    tenant = survivor["tenant_id"]
    s_id, o_id = survivor["_id"], other["_id"]
    update = merge_cards(survivor, other)

    async def unit(tx: ContactsTx) -> None:
        update["updated_at"] = tx.now
        await tx.set_contact(tenant, s_id, update)
        await tx.set_contact(
            tenant,
            o_id,
            {
                "state": "merged",
                "merged_into": s_id,
                "merged_at": tx.now,
                "updated_at": tx.now,
                **PERSON_CLEARED,
            },
        )
        await tx.repoint_merged(tenant, o_id, s_id)
        tx.emit(
            "contact.merged",
            tenant,
            ContactMerged(contact_id=s_id, merged_id=o_id),
            idempotency_key=f"merge:{o_id}",
        )

    await store.atomic(unit)
    return contact_view({**survivor, **update})
