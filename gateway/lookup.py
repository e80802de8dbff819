"""``GET /<plural>/{id}`` for the small per-tenant reference lists (custom fields, loss reasons,
plans, marketing costs): one list call, the item picked by id, 404 when absent."""

from __future__ import annotations

from typing import Any

from shared.errors import NotFound


def pick(page: dict[str, Any], value: str, what: str, *fields: str) -> dict[str, Any]:
    for item in page.get("items", []):
        if any(str(item.get(f)) == value for f in fields or ("id",)):
            return dict(item)
    raise NotFound(what)
