"""Who may see a card (the filters of :mod:`services.common.access`, checked on a document), and the
caller's phone region (pure)."""

from __future__ import annotations

from typing import Any


def allowed(flt: dict[str, Any], doc: dict[str, Any], owner_field: str = "owner_id") -> bool:
    """``doc`` passes an access filter of :mod:`services.common.access` (checked in Python, so the
    query itself filters on index fields only)."""
    if doc.get("tenant_id") != flt["tenant_id"]:
        return False
    rule = flt.get(owner_field)
    return rule is None or doc.get(owner_field) in rule["$in"]


def region(ctx: dict[str, Any]) -> str:
    """The tenant's default phone region (numbers without a country code)."""
    return str((ctx.get("settings") or {}).get("default_region") or "RU")


def prefix_range(term: str) -> dict[str, str]:
    """A prefix match as an index range (no regex: every engine uses the index bounds)."""
    return {"$gte": term, "$lt": term + "\U0010ffff"}
