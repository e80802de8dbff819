"""Avito Messenger sender: an OAuth ``client_credentials`` token, then the chat's messages.

1. ``POST {api_base_url}/token`` (form ``grant_type=client_credentials``, ``client_id``,
   ``client_secret``) → ``{"access_token", "expires_in", "token_type": "Bearer"}``. The token is
   kept in memory per channel until a minute before it expires (and for the same credentials
   only: rotating the secrets fetches a new one). A 401 on a send drops it and asks once more.
2. ``POST {api_base_url}/messenger/v1/accounts/{user_id}/chats/{chat_id}/messages`` with
   ``Authorization: Bearer <token>`` and ``{"message": {"text": ...}, "type": "text"}`` →
   ``{"id", "created", "direction": "out", "type", "content"}``.

Failures: 429 and 5xx (and network errors) are retryable, ``Retry-After`` honoured; any other
4xx is not (402: the account's subscription has no Messenger API; 403: no access to the chat),
with Avito's ``error.message``. Text is at most 1000 characters, as Avito documents.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from services.connectors.adapters.base import ChannelView

from . import _http
from .base import OutboundMessage, SendFailed, SendResult

DEFAULT_API_BASE_URL = "https://api.avito.ru"
MAX_TEXT = 1000
EXPIRY_MARGIN = timedelta(seconds=60)
PROVIDER = "Avito"


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: datetime
    credentials: str


def _error_text(resp: httpx.Response) -> str:
    doc = _http.json_of(resp)
    error = doc.get("error")
    if isinstance(error, dict):
        return _http.reason(error.get("message") or error.get("code") or f"HTTP {resp.status_code}")
    if isinstance(error, str):  # the OAuth endpoint: {"error": "invalid_client", "error_description"}
        return _http.reason(doc.get("error_description") or error)
    return f"HTTP {resp.status_code}"


def _transient(resp: httpx.Response, now: datetime, what: str) -> SendFailed | None:
    if resp.status_code == 429:
        wait = _http.retry_after(resp, now)
        return SendFailed(
            f"Avito rate limit on {what}.", retryable=True, retry_after_s=wait if wait is not None else 60.0
        )
    if resp.status_code >= 500:
        return SendFailed(
            f"Avito is unavailable ({what}: HTTP {resp.status_code}).",
            retryable=True,
            retry_after_s=_http.retry_after(resp, now),
        )
    return None


class AvitoSender:
    kind = "avito"
    resend_safe = False
    """No idempotency key: a send cut off by a crash is not repeated."""

    def __init__(self) -> None:
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def forget(self, channel_id: str) -> None:
        self._tokens.pop(channel_id, None)

    async def token(self, channel: ChannelView, http: httpx.AsyncClient, now: datetime) -> str:
        client_id = _http.secret(channel, "client_id", PROVIDER)
        client_secret = _http.secret(channel, "client_secret", PROVIDER)
        credentials = hashlib.sha256(f"{client_id}\0{client_secret}".encode()).hexdigest()
        lock = self._locks.setdefault(channel.id, asyncio.Lock())
        async with lock:  # one token request per channel at a time
            held = self._tokens.get(channel.id)
            if held and held.credentials == credentials and held.expires_at - EXPIRY_MARGIN > now:
                return held.value
            url = f"{_http.base_url(channel, DEFAULT_API_BASE_URL)}/token"
            form = {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            }
            resp = await _http.request(http, "POST", url, PROVIDER, idempotent=True, data=form)
            if failed := _transient(resp, now, "the token request"):
                raise failed
            doc = _http.json_of(resp)
            value, ttl = doc.get("access_token"), doc.get("expires_in")
            if resp.status_code != 200 or not isinstance(value, str) or not value:
                raise SendFailed(
                    f"Avito refused secrets.client_id / secrets.client_secret ({_error_text(resp)}).",
                    retryable=False,
                )
            seconds = ttl if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0 else 3600
            self._tokens[channel.id] = _Token(value, now + timedelta(seconds=seconds), credentials)
            return value

    async def send(
        self, channel: ChannelView, message: OutboundMessage, http: Any, now: datetime
    ) -> SendResult:
        chat_id = _http.address_value(message.address, "chat_id", PROVIDER)
        user_id = str(message.address.get("user_id") or "").strip() or _http.config_value(
            channel, "user_id", PROVIDER
        )
        if not message.text.strip():
            raise SendFailed("Avito: an empty message cannot be sent.", retryable=False)
        if len(message.text) > MAX_TEXT:
            raise SendFailed(f"Avito: a message holds at most {MAX_TEXT} characters.", retryable=False)
        base = _http.base_url(channel, DEFAULT_API_BASE_URL)
        # ids from a webhook go into the path: encoded, so none can reach another endpoint
        url = (
            f"{base}/messenger/v1/accounts/{quote(user_id, safe='')}/chats/{quote(chat_id, safe='')}/messages"
        )
        body = {"message": {"text": message.text}, "type": "text"}
        for attempt in (1, 2):
            token = await self.token(channel, http, now)
            resp = await _http.request(
                http,
                "POST",
                url,
                PROVIDER,
                idempotent=False,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            if resp.status_code == 401 and attempt == 1:
                self.forget(channel.id)  # revoked or expired early: one fresh token
                continue
            break
        if resp.status_code == 200:
            msg_id = _http.json_of(resp).get("id")
            if isinstance(msg_id, str) and msg_id:
                return SendResult(provider_message_id=msg_id)
            raise SendFailed(
                "Avito answered 200 without a message id; it may have been delivered, so it is not "
                "sent again.",
                retryable=False,
            )
        if failed := _transient(resp, now, "the message"):
            raise failed
        raise SendFailed(
            f"Avito refused the message (HTTP {resp.status_code}: {_error_text(resp)}).", retryable=False
        )


SENDER = AvitoSender()
