"""The person's data: everything held about them (export), and erasure."""

from __future__ import annotations

import logging
from typing import Any

from services.common.access import must, require_admin, tenant_of
from services.contacts import api
from services.contacts.domain.cards import PERSON_CLEARED
from services.contacts.domain.views import company_view, export_card, inbox_view, timeline_view
from services.contacts.handlers.access import visible
from services.contacts.store import ContactsStore, ContactsTx, sender_filter
from shared.errors import Gone
from shared.events import ContactErased
from shared.normalize import identity_digest

log = logging.getLogger(__name__)
Ctx = dict[str, Any]


async def export_contact(store: ContactsStore, ctx: Ctx, req: api.ExportContact) -> api.ContactExport:
    """Everything this service holds about the person: the card, its merged ids, the whole
    timeline and the inbox items of that sender."""
    contact = await visible(store, ctx, req.contact_id)
    tenant = contact["tenant_id"]
    items = await store.whole_timeline(tenant, contact["_id"])
    ors = [{"contact_id": contact["_id"]}, *sender_filter(contact["phones"], contact["emails"])]
    inbox = await store.inbox_of(tenant, ors)
    company = (
        await store.company({"tenant_id": tenant}, contact["company_id"])
        if contact.get("company_id")
        else None
    )
    return api.ContactExport(
        contact=export_card(contact),
        company=company_view(company) if company else None,
        timeline=[timeline_view(d) for d in items],
        inbox=[inbox_view(d) for d in inbox],
    )


async def erase_contact(
    store: ContactsStore, ctx: Ctx, req: api.EraseContact, *, identity_key: bytes
) -> api.EraseResult:
    """Remove the person's data: the card keeps only ids, source and dates; timeline items keep
    kind, direction, time and channel (so counts stay right) without summary or data; inbox
    items of the same sender lose the sender and the content. Emits ``contact.erased`` with
    one-way keys (``identity_key``) of the phones, emails and handles, never the values."""
    require_admin(ctx)
    tenant = tenant_of(ctx)
    contact = must(await store.contact(tenant, req.contact_id), "contact")
    if contact.get("state") == "merged" and contact.get("merged_into"):
        contact = await visible(store, ctx, contact["merged_into"])
    if contact.get("state") == "erased":
        raise Gone("This contact was erased.")
    c_id = contact["_id"]
    ids = [c_id, *contact.get("merged_ids", [])]
    ors = [{"contact_id": {"$in": ids}}, *sender_filter(contact.get("phones", []), contact.get("emails", []))]
    held = await store.identities_of(tenant, ids)
    identity_keys = sorted(
        {
            identity_digest(tenant, v, identity_key)
            for d in held
            for f in ("phones", "emails", "handles")
            for v in d.get(f) or []
        }
    )

    async def unit(tx: ContactsTx) -> None:
        await tx.set_contacts(tenant, ids, {**PERSON_CLEARED, "updated_at": tx.now, "erased_at": tx.now})
        await tx.set_contact(tenant, c_id, {"state": "erased"})
        await tx.clear_timeline(tenant, c_id)
        await tx.clear_inbox(tenant, ors)
        await tx.release_identities(ids)
        await tx.forget_duplicates(tenant, c_id)
        tx.emit(
            "contact.erased",
            tenant,
            ContactErased(contact_id=c_id, identity_keys=identity_keys),
            idempotency_key=f"erase:{c_id}",
        )
        for merged in contact.get("merged_ids", []):
            tx.emit(
                "contact.erased", tenant, ContactErased(contact_id=merged), idempotency_key=f"erase:{merged}"
            )

    await store.atomic(unit)
    log.info("contact erased", extra={"contact_id": c_id})
    return api.EraseResult(contact_id=c_id, erased=True)
