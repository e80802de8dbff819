"""VK community sender: ``POST {api_base_url}/method/messages.send``.

Form body (not the URL, so the token never lands in a log line): ``access_token`` (the community
token, ``secrets.access_token``), ``v`` (``config.api_version``, default ``5.199``), ``peer_id``
(the thread's address), ``message``, and ``random_id``: an int32 derived from
:attr:`OutboundMessage.idempotency_key` (:func:`random_id_for`), so a repeat of the same send is
deduplicated by VK itself. Answer ``{"response": <message id>}`` → :class:`SendResult` (``extra``
carries the ``random_id``, which the ``message_reply`` echo of the answer also carries), or
``{"error": {"error_code", "error_msg"}}`` mapped to:

- ``6`` too many requests per second: retryable after a second;
- ``9`` flood control (too many identical messages): retryable later (a minute);
- ``1`` unknown, ``10`` internal server error, HTTP 5xx/429, network errors: retryable;
- ``901`` (the client has not allowed messages from the community) and ``902`` (their privacy
  settings forbid it), ``900`` (blacklisted): not retryable, saying why;
- ``5`` authorisation failed (a bad or revoked token): not retryable;
- anything else: not retryable, with VK's message.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from services.connectors.adapters.base import ChannelView

from . import _http
from .base import OutboundMessage, SendFailed, SendResult

DEFAULT_API_BASE_URL = "https://api.vk.com"
DEFAULT_API_VERSION = "5.199"
MAX_TEXT = 4096
PROVIDER = "VK"
RETRY_AFTER: dict[int, float] = {6: 1.0, 9: 60.0, 1: 5.0, 10: 5.0}
FINAL: dict[int, str] = {
    5: "VK refused the community token (authorisation failed); set a valid secrets.access_token",
    900: "VK: the client has blacklisted the community",
    901: "VK: the client has not allowed messages from the community; they must write first or allow messages",
    902: "VK: the client's privacy settings forbid messages from the community",
}


def random_id_for(idempotency_key: str) -> int:
    """A positive int32 from the key: the same send always carries the same ``random_id``."""
    value = int.from_bytes(hashlib.sha256(idempotency_key.encode()).digest()[:4], "big") & 0x7FFFFFFF
    return value or 1


class VkSender:
    kind = "vk"
    resend_safe = True
    """VK drops a repeat with the same random_id."""

    async def send(
        self, channel: ChannelView, message: OutboundMessage, http: Any, now: datetime
    ) -> SendResult:
        token = _http.secret(channel, "access_token", PROVIDER)
        peer_id = _http.address_value(message.address, "peer_id", PROVIDER)
        if not message.text.strip():
            raise SendFailed("VK: an empty message cannot be sent.", retryable=False)
        if len(message.text) > MAX_TEXT:
            raise SendFailed(f"VK: a message holds at most {MAX_TEXT} characters.", retryable=False)
        version = str(channel.config.get("api_version") or DEFAULT_API_VERSION)
        rid = random_id_for(message.idempotency_key)
        form = {
            "access_token": token,
            "v": version,
            "peer_id": peer_id,
            "message": message.text,
            "random_id": str(rid),
        }
        url = f"{_http.base_url(channel, DEFAULT_API_BASE_URL)}/method/messages.send"
        resp = await _http.request(http, "POST", url, PROVIDER, idempotent=True, data=form)
        if resp.status_code == 429 or resp.status_code >= 500:
            wait = _http.retry_after(resp, now)
            raise SendFailed(
                f"VK is unavailable (HTTP {resp.status_code}).", retryable=True, retry_after_s=wait
            )
        doc = _http.json_of(resp)
        answer = doc.get("response")
        if resp.status_code == 200 and isinstance(answer, int) and not isinstance(answer, bool):
            return SendResult(provider_message_id=str(answer), extra={"random_id": rid})
        error = doc.get("error")
        if isinstance(error, dict):
            code = error.get("error_code")
            text = _http.reason(error.get("error_msg") or "error")
            if isinstance(code, int) and code in FINAL:
                raise SendFailed(f"{FINAL[code]} ({code}: {text}).", retryable=False)
            if isinstance(code, int) and code in RETRY_AFTER:
                raise SendFailed(f"VK: {text} ({code}).", retryable=True, retry_after_s=RETRY_AFTER[code])
            raise SendFailed(f"VK refused the message: {text} ({code}).", retryable=False)
        raise SendFailed(f"VK answered HTTP {resp.status_code} without a message id.", retryable=False)


SENDER = VkSender()
