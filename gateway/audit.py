"""Audit log: every successful mutating API call, who made it, on which record, and when.

Written by an ASGI middleware after the response is sent (so a slow database never slows the
answer down, and a failure to audit is logged, not turned into an error for the client). The record
id is the route's first path parameter (``/contacts/{contact_id}``) or, for a create, the ``id`` /
``*_id`` of the JSON answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.clock import Clock, new_id
from shared.pagination import DEFAULT_LIMIT, decode_cursor, page

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CAPTURE_LIMIT = 64 * 1024


def record_id_of(scope: Scope, status: int, body: bytes) -> str | None:
    params = scope.get("path_params") or {}
    for value in params.values():
        return str(value)
    if status == 201 and body:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if isinstance(data, dict):
            if isinstance(data.get("id"), str):
                return str(data["id"])
            for key, value in data.items():
                if key.endswith("_id") and isinstance(value, str) and key != "tenant_id":
                    return value
            if isinstance(data.get("tenant_id"), str):
                return str(data["tenant_id"])
    return None


def route_of(scope: Scope) -> str:
    return str(getattr(scope.get("route"), "path", scope["path"]))


class AuditMiddleware:
    def __init__(self, app: ASGIApp, collection: Callable[[], Any], clock: Clock) -> None:
        self.app = app
        self.collection = collection
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in MUTATING
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        status = 500
        chunks: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and size < CAPTURE_LIMIT:
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
            await send(message)

        await self.app(scope, receive, capture)
        principal = (scope.get("state") or {}).get("principal")
        if principal is None or status >= 400:
            return
        try:
            await self.collection().insert_one(
                {
                    "_id": new_id(),
                    "tenant_id": principal.tenant_id,
                    "user_id": principal.user_id,
                    "role": principal.role,
                    "key_id": principal.key_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route_of(scope),
                    "status": status,
                    "record_id": record_id_of(scope, status, b"".join(chunks)),
                    "at": self.clock.now(),
                }
            )
        except Exception:
            log.warning("audit write failed", exc_info=True)


def audit_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "at": doc["at"],
        "user_id": doc["user_id"],
        "role": doc.get("role"),
        "method": doc["method"],
        "path": doc["path"],
        "route": doc.get("route"),
        "status": doc["status"],
        "record_id": doc.get("record_id"),
    }


async def list_audit(
    db: Any,
    tenant_id: str,
    *,
    record_id: str | None = None,
    user_id: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first, always within one tenant."""
    flt: dict[str, Any] = {"tenant_id": tenant_id}
    if record_id:
        flt["record_id"] = record_id
    if user_id:
        flt["user_id"] = user_id
    after = decode_cursor(cursor)
    if after:
        flt["_id"] = {"$lt": str(after[0])}
    docs = await db.audit.find(flt).sort("_id", -1).limit(limit + 1).to_list(limit + 1)
    return page([audit_view(d) for d in docs], limit, lambda a: [a["id"]])
