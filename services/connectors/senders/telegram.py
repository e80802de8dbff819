"""Telegram: answer through the Bot API ``sendMessage`` (https://core.telegram.org/bots/api#sendmessage).

``POST {config.api_base_url (default https://api.telegram.org)}/bot<secrets.bot_token>/sendMessage``
with ``{"chat_id", "text"}``. Telegram answers ``{"ok": true, "result": <Message>}``, whose
``message_id`` is the provider's id; an error is ``{"ok": false, "error_code", "description"}``,
and a flood limit ``429`` carries ``parameters.retry_after`` (seconds). ``sendMessage`` has no
idempotency key, so an attempt cut off by a crash is not repeated (``resend_safe`` is false).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from services.connectors.adapters.base import ChannelView
from services.connectors.senders.base import OutboundMessage, SendFailed, SendResult

DEFAULT_BASE = "https://api.telegram.org"
TEXT_LIMIT = 4096


class TelegramSender:
    kind = "telegram"
    resend_safe = False

    async def send(
        self, channel: ChannelView, message: OutboundMessage, http: Any, now: datetime
    ) -> SendResult:
        token = channel.secrets.get("bot_token")
        if not token:
            raise SendFailed("the channel has no secrets.bot_token to send with", retryable=False)
        chat_id = message.address.get("chat_id")
        if chat_id is None:
            raise SendFailed("the conversation has no Telegram chat to answer", retryable=False)
        base = str(channel.config.get("api_base_url") or DEFAULT_BASE).rstrip("/")
        body = {"chat_id": chat_id, "text": message.text[:TEXT_LIMIT]}
        try:
            r = await http.post(f"{base}/bot{token}/sendMessage", json=body)
        except httpx.ConnectError as exc:  # never reached Telegram: safe to try again
            raise SendFailed(f"Telegram is unreachable ({type(exc).__name__})", retryable=True) from exc
        except httpx.HTTPError as exc:  # may have reached it: not repeated
            raise SendFailed(f"no answer from Telegram ({type(exc).__name__})", retryable=False) from exc
        answer = _json_object(r)
        if r.status_code == 200 and answer.get("ok") is True:
            result = _object(answer.get("result"))
            message_id = result.get("message_id")
            if message_id is None:
                raise SendFailed("Telegram accepted the message without a message_id", retryable=False)
            return SendResult(provider_message_id=str(message_id), status="sent")
        error_code = answer.get("error_code")
        code = error_code if isinstance(error_code, int) else r.status_code
        description = str(answer.get("description") or f"HTTP {r.status_code}")[:300]
        if code == 429:
            retry_after = _object(answer.get("parameters")).get("retry_after")
            wait = float(retry_after) if isinstance(retry_after, int | float) else None
            raise SendFailed(f"Telegram {code}: {description}", retryable=True, retry_after_s=wait)
        raise SendFailed(f"Telegram {code}: {description}", retryable=code >= 500)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json_object(r: httpx.Response) -> dict[str, Any]:
    try:
        return _object(r.json())
    except ValueError:
        return {}


SENDER = TelegramSender()
