"""Custom field definitions, and the validation of a record's ``custom`` values for other services."""

from __future__ import annotations

from typing import Any

from services.common.access import require_admin, tenant_of
from services.contacts import api
from services.contacts.domain.access import region
from services.contacts.domain.custom_fields import check_definition, definition_view, validate_custom
from services.contacts.store import ContactsStore
from shared.clock import new_id
from shared.errors import Conflict, ValidationFailed

Ctx = dict[str, Any]


async def create_custom_field(
    store: ContactsStore, ctx: Ctx, req: api.CreateCustomField
) -> api.CustomFieldOut:
    require_admin(ctx)
    definition, errors = check_definition(req.body.model_dump(exclude_unset=True))
    if errors:
        raise ValidationFailed(errors)
    doc = {"_id": new_id(), "tenant_id": tenant_of(ctx), **definition, "created_at": store.now()}
    if not await store.insert_custom_field(doc):
        raise Conflict(
            f"A {definition['entity']} field with the key {definition['key']!r} exists.",
            errors={"key": "is taken"},
        )
    return definition_view(doc)


async def list_custom_fields(store: ContactsStore, ctx: Ctx, req: api.ListCustomFields) -> dict[str, Any]:
    docs = await store.custom_fields(tenant_of(ctx), req.entity)
    return {"items": [definition_view(d) for d in docs], "next_cursor": None}


async def validate_custom_values(store: ContactsStore, ctx: Ctx, req: api.ValidateCustom) -> api.CustomValues:
    """``{"custom": canonical values}``, or 422 naming each ``custom.<key>``."""
    custom, errors = validate_custom(
        await store.custom_fields(tenant_of(ctx), req.entity),
        req.custom,
        existing=req.existing,
        partial=req.partial,
        region=region(ctx),
    )
    if errors:
        raise ValidationFailed(errors)
    return api.CustomValues(custom=custom)
