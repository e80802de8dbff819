"""Visibility rules every service applies in its own queries (not only in the gateway).

admin — everything in the tenant; manager — reads and writes what it owns and unowned records,
reads the rest only when the tenant's ``managers_see_all`` is on; viewer — reads like a manager,
writes nothing.
"""

from __future__ import annotations

from typing import Any

from shared.errors import Forbidden, NotFound, ValidationFailed

WRITERS = ("admin", "manager")


def tenant_of(ctx: dict[str, Any]) -> str:
    tenant = ctx.get("tenant_id")
    if not tenant:
        raise ValidationFailed({"tenant_id": "missing from the call context"})
    return str(tenant)


def require_writer(ctx: dict[str, Any]) -> None:
    """Decided before any record is looked up."""
    if ctx.get("role") not in WRITERS:
        raise Forbidden(f"The {ctx.get('role')} role may not change records.")


def require_admin(ctx: dict[str, Any]) -> None:
    if ctx.get("role") != "admin":
        raise Forbidden(f"The {ctx.get('role')} role may not do this.")


def read_filter(ctx: dict[str, Any], owner_field: str = "owner_id") -> dict[str, Any]:
    """The query filter of what the caller may read."""
    flt: dict[str, Any] = {"tenant_id": tenant_of(ctx)}
    role = ctx.get("role")
    if role == "admin" or (ctx.get("settings") or {}).get("managers_see_all"):
        return flt
    flt[owner_field] = {"$in": [ctx.get("user_id"), None]}
    return flt


def write_filter(ctx: dict[str, Any], owner_field: str = "owner_id") -> dict[str, Any]:
    """The query filter of what the caller may change."""
    require_writer(ctx)
    flt: dict[str, Any] = {"tenant_id": tenant_of(ctx)}
    if ctx.get("role") != "admin":
        flt[owner_field] = {"$in": [ctx.get("user_id"), None]}
    return flt


def must(doc: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if doc is None:
        raise NotFound(what)
    return doc
