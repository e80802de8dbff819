"""What keeps unauthenticated hooks from filling the database or the pipeline.

- :func:`auth_health`: an optional-secret kind without its secret says so on the channel's health.
- :class:`HookLimiter`: token buckets per channel and per client address for ``/hooks/*``; over
  either one the hook answers 429 with ``Retry-After`` before anything is read or stored.
- :func:`rejected_record`: a rejected hook is kept for inspection truncated (body to
  ``BODY_KEEP`` bytes, at most ``HEADER_COUNT`` headers of ``HEADER_KEEP`` characters), and
  :func:`keep_within_quota` keeps at most ``QUOTA`` of them per channel, the newest.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

BODY_KEEP = 4096
HEADER_KEEP = 1024
HEADER_COUNT = 50
QUOTA = 100


OPTIONAL_SECRETS: dict[str, tuple[str, ...]] = {
    "form": ("token", "hmac_secret"),
    "tilda": ("token",),
    "yandex_forms": ("token",),
    "asterisk": ("hmac_secret",),
    "avito": ("token",),
}
"""Kinds whose provider does not sign its calls: a secret is optional, and its absence is shown."""


def auth_health(kind: str, secret_names: list[str]) -> dict[str, Any]:
    """For the channel's health: ``unauthenticated`` (and a ``warning``) when an optional-secret
    kind has none of its secrets set, so anyone who learns the hook URL can post to it."""
    names = OPTIONAL_SECRETS.get(kind)
    if names is None:
        return {}
    if any(n in secret_names for n in names):
        return {"unauthenticated": False, "warning": None}
    wanted = " or ".join(f"secrets.{n}" for n in names)
    return {
        "unauthenticated": True,
        "warning": f"No secret is set: anyone who knows the hook URL can post to it. Set {wanted}.",
    }


class HookLimiter:
    """``channel_rate``/``client_rate`` hooks a second (burst 2x); 0 turns a bucket off."""

    def __init__(self, channel_rate: float, client_rate: float, max_keys: int = 100_000) -> None:
        self.channel_rate = channel_rate
        self.client_rate = client_rate
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def _take(self, key: str, rate: float, now: float) -> float:
        if rate <= 0:
            return 0.0
        burst = max(1.0, rate * 2)
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / rate

    def check(self, channel_id: str, client: str, now: float) -> int:
        """0 when the hook may go on, else the seconds to put in ``Retry-After``."""
        if len(self._buckets) > self.max_keys:
            self._buckets.clear()
        wait = self._take(f"ip:{client}", self.client_rate, now)
        if wait == 0:
            wait = self._take(f"ch:{channel_id}", self.channel_rate, now)
        return max(1, math.ceil(wait)) if wait > 0 else 0


def rejected_record(
    doc: dict[str, Any],
    *,
    record_id: str,
    at: datetime,
    status: int,
    reason: str,
    method: str,
    subpath: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> dict[str, Any]:
    """The document kept about a rejected hook: enough to debug the channel, bounded in size."""
    kept_headers = {k[:200]: v[:HEADER_KEEP] for k, v in list(headers.items())[:HEADER_COUNT]}
    return {
        "_id": record_id,
        "tenant_id": doc["tenant_id"],
        "channel_id": doc["_id"],
        "at": at,
        "status": status,
        "reason": reason[:200],
        "method": method,
        "subpath": subpath[:500],
        "query": query[:HEADER_KEEP],
        "headers": kept_headers,
        "body": body[:BODY_KEEP],
        "body_size": len(body),
        "truncated": len(body) > BODY_KEEP,
    }


async def keep_within_quota(collection: Any, channel_id: str, quota: int | None = None) -> None:
    """Drop the oldest rejected hooks of a channel beyond ``quota`` (default :data:`QUOTA`)."""
    quota = QUOTA if quota is None else quota
    old = (
        await collection.find({"channel_id": channel_id}, {"_id": 1})
        .sort("at", -1)
        .skip(quota)
        .limit(1000)
        .to_list(1000)
    )
    if old:
        await collection.delete_many({"_id": {"$in": [d["_id"] for d in old]}})
