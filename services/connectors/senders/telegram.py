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

from services.connectors.adapters.base import ChannelView
from services.connectors.senders import _http
from services.connectors.senders.base import OutboundMessage, SendFailed, SendResult

PROVIDER = "Telegram"
DEFAULT_BASE = "https://api.telegram.org"
TEXT_LIMIT = 4096


class TelegramSender:
    kind = "telegram"
    resend_safe = False

    async def send(
        self, channel: ChannelView, message: OutboundMessage, http: Any, now: datetime
    ) -> SendResult:
        token = _http.secret(channel, "bot_token", PROVIDER)
        chat_id = message.address.get("chat_id")  # an int or an @username, sent as it came
        if chat_id is None:
            raise SendFailed("the conversation has no Telegram chat to answer", retryable=False)
        body = {"chat_id": chat_id, "text": message.text[:TEXT_LIMIT]}
        url = f"{_http.base_url(channel, DEFAULT_BASE)}/bot{token}/sendMessage"
        r = await _http.request(http, "POST", url, PROVIDER, idempotent=False, json=body)
        answer = _http.json_of(r)
        if r.status_code == 200 and answer.get("ok") is True:
            result = _object(answer.get("result"))
            message_id = result.get("message_id")
            if message_id is None:
                raise SendFailed("Telegram accepted the message without a message_id", retryable=False)
            return SendResult(provider_message_id=str(message_id), status="sent")
        error_code = answer.get("error_code")
        code = error_code if isinstance(error_code, int) else r.status_code
        description = _http.reason(answer.get("description") or f"HTTP {r.status_code}")
        if code == 429:
            retry_after = _object(answer.get("parameters")).get("retry_after")
            wait = float(retry_after) if isinstance(retry_after, int | float) else None
            raise SendFailed(f"Telegram {code}: {description}", retryable=True, retry_after_s=wait)
        raise SendFailed(f"Telegram {code}: {description}", retryable=code >= 500)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


SENDER = TelegramSender()
