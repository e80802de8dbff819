"""Cursor pagination: ``?limit=`` (default 50, max 500) and an opaque ``?cursor=``."""

from __future__ import annotations

import base64
import json
from typing import Any

from shared.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def clamp_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if limit < 1 or limit > MAX_LIMIT:
        raise ValidationFailed({"limit": f"must be between 1 and {MAX_LIMIT}"})
    return limit


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, default=str, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> list[Any] | None:
    if not cursor:
        return None
    try:
        pad = "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(cursor + pad))
    except (ValueError, TypeError) as exc:
        raise ValidationFailed({"cursor": "is not a cursor this API issued"}) from exc
    if not isinstance(values, list):
        raise ValidationFailed({"cursor": "is not a cursor this API issued"})
    return values


def page(items: list[Any], limit: int, key: Any) -> dict[str, Any]:
    """``items`` fetched with ``limit + 1``: the page and the cursor of its last item."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(key(items[-1])) if more and items else None}
