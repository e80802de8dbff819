"""What the provider senders share: one guarded HTTP call, its failures as :class:`SendFailed`.

- A failure before the request left (connection refused, connect timeout) may be repeated:
  ``retryable``. One after it left (no answer, a reset) is retryable only where the provider
  deduplicates the call (VK's ``random_id``); elsewhere the message may have been delivered.
- A destination the outbound guard refuses (``CRM_ALLOW_PRIVATE_URLS`` off and a private base URL)
  is a configuration problem: repeating it cannot help, so it is not retryable.
- ``Retry-After`` (seconds or an HTTP date) becomes ``retry_after_s``.

Reasons never carry the message text, the recipient or a token: they end up on the message
(``error``) and in logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from services.connectors.adapters.base import ChannelView
from shared.netguard import BlockedAddress

from .base import SendFailed

MAX_REASON = 300


def base_url(channel: ChannelView, default: str) -> str:
    """``config.api_base_url`` without its trailing slash, else the provider's own."""
    value = channel.config.get("api_base_url")
    return (value if isinstance(value, str) and value.strip() else default).strip().rstrip("/")


def secret(channel: ChannelView, name: str, provider: str) -> str:
    """A secret the sender cannot work without (a missing one is not worth a retry)."""
    value = channel.secrets.get(name)
    if not value:
        raise SendFailed(f"{provider}: secrets.{name} is not set on the channel.", retryable=False)
    return value


def config_value(channel: ChannelView, name: str, provider: str) -> str:
    value = channel.config.get(name)
    if value is None or str(value).strip() == "":
        raise SendFailed(f"{provider}: config.{name} is not set on the channel.", retryable=False)
    return str(value).strip()


def address_value(address: Mapping[str, Any], name: str, provider: str) -> str:
    value = address.get(name)
    if value is None or str(value).strip() == "":
        raise SendFailed(f"{provider}: the conversation has no {name} to answer on.", retryable=False)
    return str(value).strip()


def reason(text: Any) -> str:
    """A provider's message, one line, bounded."""
    return " ".join(str(text).split())[:MAX_REASON]


def retry_after(resp: httpx.Response, now: datetime | None = None) -> float | None:
    raw = (resp.headers.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Failures before the request left: repeating it cannot double anything."""


async def request(
    http: httpx.AsyncClient, method: str, url: str, provider: str, *, idempotent: bool, **kwargs: Any
) -> httpx.Response:
    """One call (the client's timeouts apply); network failures become :class:`SendFailed`.

    A failure after the request left (no answer, a cut connection) may mean the provider acted on
    it: it is retryable only when the call is ``idempotent`` (the provider deduplicates it)."""
    try:
        return await http.request(method, url, **kwargs)
    except BlockedAddress as exc:
        raise SendFailed(
            f"{provider}: the API base URL is refused by the outbound guard ({reason(exc)}).",
            retryable=False,
        ) from exc
    except NOT_SENT as exc:
        raise SendFailed(f"{provider} unreachable ({type(exc).__name__}).", retryable=True) from exc
    except httpx.HTTPError as exc:
        if idempotent:
            raise SendFailed(f"{provider} did not answer ({type(exc).__name__}).", retryable=True) from exc
        raise SendFailed(
            f"{provider} did not answer ({type(exc).__name__}); the message may have been delivered, "
            "so it is not sent again.",
            retryable=False,
        ) from exc


def json_of(resp: httpx.Response) -> Mapping[str, Any]:
    """The answer as a JSON object ({} when it is not one)."""
    try:
        doc = resp.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, Mapping) else {}
