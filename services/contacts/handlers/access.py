"""The card a caller names, if the caller may see (or change) it: 404 when unknown or not
allowed, 410 when erased; an id merged away stands for its survivor."""

from __future__ import annotations

from typing import Any

from services.common.access import read_filter, write_filter
from services.contacts.domain.access import allowed
from services.contacts.store import ContactsStore
from shared.errors import Gone, NotFound

MERGE_DEPTH = 10


async def card(store: ContactsStore, flt: dict[str, Any], contact_id: str) -> dict[str, Any]:
    """The active contact ``contact_id`` stands for (following merges) if ``flt`` allows it."""
    for _ in range(MERGE_DEPTH + 1):
        doc = await store.contact(flt["tenant_id"], contact_id)
        if doc is None or not allowed(flt, doc):
            raise NotFound("contact")
        if doc.get("state") == "erased":
            raise Gone("This contact was erased.")
        if doc.get("state") == "merged" and doc.get("merged_into"):
            contact_id = doc["merged_into"]
            continue
        if doc.get("state") != "active":
            raise NotFound("contact")
        return doc
    raise NotFound("contact")


async def visible(store: ContactsStore, ctx: dict[str, Any], contact_id: str) -> dict[str, Any]:
    return await card(store, read_filter(ctx), contact_id)


async def writable(store: ContactsStore, ctx: dict[str, Any], contact_id: str) -> dict[str, Any]:
    return await card(store, write_filter(ctx), contact_id)


async def check_company(
    store: ContactsStore, tenant: str, company_id: str | None, errors: dict[str, str]
) -> None:
    if company_id and not await store.company({"tenant_id": tenant}, company_id):
        errors["company_id"] = "is not a company of this tenant"
