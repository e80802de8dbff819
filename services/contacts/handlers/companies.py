"""Companies: create, list, read, change."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from services.common.access import must, read_filter, write_filter
from services.contacts import api
from services.contacts.domain.access import region
from services.contacts.domain.cards import (
    MANAGER_ASSIGNS_ITSELF,
    clean_tags,
    may_reassign,
    normalize_identities,
    search_words,
)
from services.contacts.domain.custom_fields import validate_custom
from services.contacts.domain.views import company_view
from services.contacts.store import ContactsStore, ContactsTx
from shared.clock import new_id
from shared.errors import ValidationFailed
from shared.events import CompanyCreated, CompanyUpdated
from shared.normalize import clean_text
from shared.pagination import clamp_limit, decode_cursor, page

Ctx = dict[str, Any]


def company_fields(ctx: Ctx, body: BaseModel, errors: dict[str, str]) -> dict[str, Any]:
    """The stored fields of what ``body`` sent (``model_fields_set``), cleaned; errors by field."""
    sent = body.model_fields_set
    values = body.model_dump()
    out: dict[str, Any] = {}
    if "name" in sent:
        out["name"] = clean_text(values.get("name"), 300) or None
        if not out["name"]:
            errors["name"] = "is required"
    if "domain" in sent:
        out["domain"] = (clean_text(values.get("domain"), 253) or "").lower() or None
    if "phones" in sent or "emails" in sent:
        phones, emails, errs = normalize_identities(
            values.get("phones") or [], values.get("emails") or [], region(ctx)
        )
        errors.update(errs)
        if "phones" in sent:
            out["phones"] = phones
        if "emails" in sent:
            out["emails"] = emails
    if "tags" in sent:
        out["tags"] = clean_tags(values.get("tags"))
    if "owner_id" in sent:
        out["owner_id"] = values.get("owner_id")
        if not may_reassign(ctx, out["owner_id"]):
            errors["owner_id"] = MANAGER_ASSIGNS_ITSELF
    return out


async def create_company(store: ContactsStore, ctx: Ctx, req: api.CreateCompany) -> api.CompanyOut:
    wf = write_filter(ctx)
    body = req.body.model_copy()
    body.model_fields_set.add("name")
    errors: dict[str, str] = {}
    fields = company_fields(ctx, body, errors)
    custom, custom_errors = validate_custom(
        await store.custom_fields(wf["tenant_id"], "company"), body.custom, region=region(ctx)
    )
    errors.update(custom_errors)
    if errors:
        raise ValidationFailed(errors)
    doc = {
        "_id": new_id(),
        "tenant_id": wf["tenant_id"],
        "name": fields["name"],
        "domain": fields.get("domain"),
        "phones": fields.get("phones", []),
        "emails": fields.get("emails", []),
        "tags": fields.get("tags", []),
        "custom": custom,
        "owner_id": fields.get("owner_id", None if ctx.get("role") == "admin" else ctx.get("user_id")),
    }
    doc["search"] = search_words(doc["name"], doc["phones"], doc["emails"])

    async def unit(tx: ContactsTx) -> dict[str, Any]:
        doc.update(created_at=tx.now, updated_at=tx.now)
        await tx.insert_company(doc)
        tx.emit(
            "company.created",
            doc["tenant_id"],
            CompanyCreated(company_id=doc["_id"], owner_id=doc["owner_id"]),
        )
        return doc

    return company_view(await store.atomic(unit))


async def list_companies(store: ContactsStore, ctx: Ctx, req: api.ListCompanies) -> dict[str, Any]:
    limit = clamp_limit(req.limit)
    flt: dict[str, Any] = read_filter(ctx)
    q = (req.q or "").strip().lower().replace("ё", "е")
    if q:
        flt["search"] = {"$regex": "^" + re.escape(q)}
    after = decode_cursor(req.cursor)
    if after:
        flt["_id"] = {"$lt": after[0]}
    docs = await store.companies_page(flt, limit)
    return page([company_view(d) for d in docs], limit, lambda it: [it.id])


async def get_company(store: ContactsStore, ctx: Ctx, req: api.GetCompany) -> api.CompanyOut:
    return company_view(must(await store.company(read_filter(ctx), req.company_id), "company"))


async def update_company(store: ContactsStore, ctx: Ctx, req: api.UpdateCompany) -> api.CompanyOut:
    wf = write_filter(ctx)
    doc = must(await store.company(wf, req.company_id), "company")
    errors: dict[str, str] = {}
    changes = req.changes
    update = company_fields(ctx, changes, errors)
    if changes.custom is not None:
        update["custom"], custom_errors = validate_custom(
            await store.custom_fields(wf["tenant_id"], "company"),
            changes.custom,
            existing=doc.get("custom") or {},
            partial=True,
            region=region(ctx),
        )
        errors.update(custom_errors)
    if errors:
        raise ValidationFailed(errors)
    merged = {**doc, **update}
    update["search"] = search_words(merged["name"], merged.get("phones", []), merged.get("emails", []))

    async def unit(tx: ContactsTx) -> None:
        update["updated_at"] = tx.now
        await tx.set_company(doc["_id"], update)
        tx.emit(
            "company.updated", doc["tenant_id"], CompanyUpdated(company_id=doc["_id"], fields=sorted(update))
        )

    await store.atomic(unit)
    return company_view({**doc, **update})
