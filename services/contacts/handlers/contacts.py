"""The customer card by hand: list and search, read, create, change, delete."""

from __future__ import annotations

import re
from typing import Any

from services.common.access import read_filter, write_filter
from services.contacts import api
from services.contacts.domain.access import allowed, prefix_range, region
from services.contacts.domain.cards import (
    MANAGER_ASSIGNS_ITSELF,
    clean_tags,
    may_reassign,
    name_key,
    new_contact,
    normalize_identities,
    owner_for,
    search_words,
)
from services.contacts.domain.custom_fields import validate_custom
from services.contacts.domain.views import contact_view
from services.contacts.handlers.access import check_company, visible, writable
from services.contacts.handlers.capture import create_contact as insert_new_contact
from services.contacts.store import ContactsStore, ContactsTx
from shared.errors import ValidationFailed
from shared.events import ContactDeleted, ContactUpdated
from shared.normalize import clean_text, normalize_email, phone_search_key
from shared.pagination import clamp_limit, decode_cursor, page

Ctx = dict[str, Any]


async def list_contacts(store: ContactsStore, ctx: Ctx, req: api.ListContacts) -> dict[str, Any]:
    """Newest first. The query filters on the fields of one index; state, visibility, further
    name words and the cursor are checked on the documents it returns."""
    limit = clamp_limit(req.limit)
    f = req.filters
    rf = read_filter(ctx)
    flt: dict[str, Any] = {"tenant_id": rf["tenant_id"]}
    more_words: list[str] = []
    email = (normalize_email(f.email) or f.email.strip().lower()) if f.email else None
    if f.phone:
        key = phone_search_key(f.phone, region(ctx))
        flt["phones"] = key if key and key.startswith("+") else "\x00no-match"
    elif email:
        flt["emails"] = email
    elif f.q:
        q = f.q.strip().lower().replace("ё", "е")
        digits = re.sub(r"[\s()\-+.]", "", q)
        words = [q] if "@" in q else q.split()
        if digits.isdigit():
            words = [digits]
        flt["search"] = prefix_range(words[0])
        more_words = words[1:5]  # "иван пет": every word starts some word of the contact
    elif f.company_id:
        flt["company_id"] = f.company_id
    elif f.owner_id:
        flt["owner_id"] = f.owner_id
    after = decode_cursor(req.cursor)
    last = str(after[0]) if after else None

    def wanted(doc: dict[str, Any]) -> bool:
        if doc.get("state") != "active" or not allowed(rf, doc):
            return False
        if last is not None and doc["_id"] >= last:
            return False
        if f.company_id and doc.get("company_id") != f.company_id:
            return False
        if f.owner_id and doc.get("owner_id") != f.owner_id:
            return False
        if email and "phones" in flt and email not in doc.get("emails", []):
            return False  # phone and email both given: the query used the phone
        search = doc.get("search", [])
        return all(any(w.startswith(m) for w in search) for m in more_words)

    docs = await store.contacts_page(flt, wanted, limit, last)
    return page([contact_view(d) for d in docs], limit, lambda it: [it.id])


async def get_contact(store: ContactsStore, ctx: Ctx, req: api.GetContact) -> api.ContactOut:
    doc = await visible(store, ctx, req.contact_id)
    view = contact_view(doc)
    if doc["_id"] != req.contact_id:
        view.merged_into = doc["_id"]  # an old id of a merged contact: the survivor answers
    return view


async def create_contact(store: ContactsStore, ctx: Ctx, req: api.CreateContact) -> api.ContactOut:
    tenant = write_filter(ctx)["tenant_id"]
    body = req.body
    phones, emails, errors = normalize_identities(body.phones, body.emails, region(ctx))
    name = clean_text(body.name, 300) or None
    if not (name or phones or emails):
        errors["name"] = "a name, a phone or an email is required"
    owner = owner_for(ctx, body.owner_id, errors)
    custom, custom_errors = validate_custom(
        await store.custom_fields(tenant, "contact"), body.custom, region=region(ctx)
    )
    errors.update(custom_errors)
    await check_company(store, tenant, body.company_id, errors)
    if errors:
        raise ValidationFailed(errors)

    async def unit(tx: ContactsTx) -> dict[str, Any]:
        doc = new_contact(
            tenant,
            tx.now,
            name=name,
            phones=phones,
            emails=emails,
            owner_id=owner,
            source={"channel_id": None, "kind": "manual"},
            extra={"tags": clean_tags(body.tags), "custom": custom, "company_id": body.company_id},
        )
        return await insert_new_contact(tx, tenant, doc, claim=False)

    return contact_view(await store.atomic(unit))


async def update_contact(store: ContactsStore, ctx: Ctx, req: api.UpdateContact) -> api.ContactOut:
    changes = req.changes
    sent = changes.model_fields_set
    doc = await writable(store, ctx, req.contact_id)
    tenant = doc["tenant_id"]
    update: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if "phones" in sent or "emails" in sent:
        phones, emails, errors = normalize_identities(
            (changes.phones if "phones" in sent else doc["phones"]) or [],
            (changes.emails if "emails" in sent else doc["emails"]) or [],
            region(ctx),
        )
        update.update(phones=phones, emails=emails)
    if "name" in sent:
        update["name"] = clean_text(changes.name, 300) or None
        update["name_key"] = name_key(update["name"])
    if "owner_id" in sent:
        if not may_reassign(ctx, changes.owner_id):
            errors["owner_id"] = MANAGER_ASSIGNS_ITSELF
        update["owner_id"] = changes.owner_id
    if "tags" in sent:
        update["tags"] = clean_tags(changes.tags)
    if "company_id" in sent:
        await check_company(store, tenant, changes.company_id, errors)
        update["company_id"] = changes.company_id
    if "custom" in sent:
        custom, custom_errors = validate_custom(
            await store.custom_fields(tenant, "contact"),
            changes.custom or {},
            existing=doc.get("custom") or {},
            partial=True,
            region=region(ctx),
        )
        errors.update(custom_errors)
        update["custom"] = custom
    merged = {**doc, **update}
    if not (merged.get("name") or merged.get("phones") or merged.get("emails")):
        errors["name"] = "a contact keeps a name, a phone or an email"
    if errors:
        raise ValidationFailed(errors)
    update["search"] = search_words(merged.get("name"), merged["phones"], merged["emails"])

    async def unit(tx: ContactsTx) -> None:
        update["updated_at"] = tx.now
        await tx.set_contact(tenant, doc["_id"], update)
        if "phones" in update:  # claims on identities the contact no longer has are released
            keep = [f"{tenant}:p:{p}" for p in merged["phones"]] + [
                f"{tenant}:e:{e}" for e in merged["emails"]
            ]
            await tx.release_identities([doc["_id"]], keep=keep)
        tx.emit(
            "contact.updated",
            tenant,
            ContactUpdated(contact_id=doc["_id"], owner_id=merged.get("owner_id"), fields=sorted(sent)),
        )

    await store.atomic(unit)
    return contact_view({**doc, **update})


async def delete_contact(store: ContactsStore, ctx: Ctx, req: api.DeleteContact) -> None:
    doc = await writable(store, ctx, req.contact_id)

    async def unit(tx: ContactsTx) -> None:
        await tx.set_contact(doc["tenant_id"], doc["_id"], {"state": "deleted", "updated_at": tx.now})
        await tx.release_identities([doc["_id"]])
        tx.emit(
            "contact.deleted",
            doc["tenant_id"],
            ContactDeleted(contact_id=doc["_id"], owner_id=doc.get("owner_id")),
        )

    await store.atomic(unit)
