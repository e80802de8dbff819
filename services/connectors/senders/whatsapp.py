"""WhatsApp Business Cloud API sender: ``POST {api_base_url}/{phone_number_id}/messages``.

Request (``Authorization: Bearer <secrets.access_token>``): ``{"messaging_product": "whatsapp",
"recipient_type": "individual", "to": <wa_id>`` (or ``"recipient": <BSUID>`` for a user known only
by a business-scoped user id) ``, "type": "text", "text": {"preview_url": false,
"body": ...}}``, or ``"type": "template", "template": {"name", "language": {"code"},
"components"?}`` when :attr:`OutboundMessage.template` is set (the only kind of message WhatsApp
delivers more than 24 hours after the client last wrote). Answer: ``{"messages": [{"id":
"wamid..."}]}`` → :class:`SendResult` with the wamid (later ``statuses`` in the webhook move it on).

Graph errors ``{"error": {"code", "message", "error_data": {"details"}}}`` map to:

- ``131047`` (Re-engagement message, outside the 24-hour window): not retryable; the reason tells
  the manager to send a template;
- rate limits ``130429`` (throughput), ``131056`` (pair rate), ``80007`` (account), ``4``
  (application) and HTTP 429: retryable after ``Retry-After`` or the limit's own pace;
- 5xx, network errors and Meta's transient codes (``1``, ``2``, ``131000``, ``131016``): retryable;
- any other 4xx: not retryable, with the provider's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from services.connectors.adapters.base import ChannelView
from services.connectors.adapters.whatsapp import DEFAULT_API_BASE_URL

from . import _http
from .base import OutboundMessage, SendFailed, SendResult

MAX_TEXT = 4096
OUTSIDE_WINDOW = 131047
RATE_LIMITS: dict[int, float] = {130429: 1.0, 131056: 6.0, 80007: 60.0, 4: 60.0}
TRANSIENT = frozenset({1, 2, 131000, 131016})
PROVIDER = "WhatsApp"


def _template(template: dict[str, Any]) -> dict[str, Any]:
    name = template.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SendFailed("WhatsApp: the template has no name.", retryable=False)
    language = template.get("language") or "en_US"
    out = {
        **template,
        "name": name.strip(),
        "language": {"code": language} if isinstance(language, str) else language,
    }
    return out


class WhatsAppSender:
    kind = "whatsapp"
    resend_safe = False
    """No idempotency key: a send cut off by a crash is not repeated."""

    async def send(
        self, channel: ChannelView, message: OutboundMessage, http: Any, now: datetime
    ) -> SendResult:
        token = _http.secret(channel, "access_token", PROVIDER)
        number = _http.config_value(channel, "phone_number_id", PROVIDER)
        body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
        if message.address.get("to"):
            body["to"] = _http.address_value(message.address, "to", PROVIDER)
        else:  # a user known only by a business-scoped user id (a username, no phone)
            body["recipient"] = _http.address_value(message.address, "recipient", PROVIDER)
        if message.template:
            body["type"] = "template"
            body["template"] = _template(message.template)
        else:
            if not message.text.strip():
                raise SendFailed("WhatsApp: an empty message cannot be sent.", retryable=False)
            if len(message.text) > MAX_TEXT:
                raise SendFailed(
                    f"WhatsApp: a text message holds at most {MAX_TEXT} characters.", retryable=False
                )
            body["type"] = "text"
            body["text"] = {"preview_url": False, "body": message.text}
        url = f"{_http.base_url(channel, DEFAULT_API_BASE_URL)}/{quote(number, safe='')}/messages"
        resp = await _http.request(
            http,
            "POST",
            url,
            PROVIDER,
            idempotent=False,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        doc = _http.json_of(resp)
        if resp.status_code == 200:
            messages = doc.get("messages")
            first = messages[0] if isinstance(messages, list) and messages else None
            wamid = first.get("id") if isinstance(first, dict) else None
            if isinstance(wamid, str) and wamid:
                return SendResult(provider_message_id=wamid)
            raise SendFailed(
                "WhatsApp answered 200 without a message id; it may have been delivered, so it is not "
                "sent again.",
                retryable=False,
            )
        raise failure(resp, doc, now)


def failure(resp: httpx.Response, doc: Any, now: datetime) -> SendFailed:
    """The :class:`SendFailed` for a Graph API error answer."""
    raw = doc.get("error") if isinstance(doc, Mapping) else None
    error: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    data = error.get("error_data")
    details: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
    text = _http.reason(details.get("details") or error.get("message") or f"HTTP {resp.status_code}")
    tag = f" ({code})" if code is not None else f" (HTTP {resp.status_code})"
    if code == OUTSIDE_WINDOW:
        return SendFailed(
            "WhatsApp: more than 24 hours have passed since the client last wrote, so only an "
            "approved template message can be sent now; send a template." + tag,
            retryable=False,
        )
    if resp.status_code == 429 or code in RATE_LIMITS:
        wait = _http.retry_after(resp, now)
        if wait is None:
            wait = RATE_LIMITS.get(code or 0, 30.0)
        return SendFailed(f"WhatsApp rate limit: {text}{tag}", retryable=True, retry_after_s=wait)
    if resp.status_code >= 500 or code in TRANSIENT:
        return SendFailed(
            f"WhatsApp is unavailable: {text}{tag}",
            retryable=True,
            retry_after_s=_http.retry_after(resp, now),
        )
    return SendFailed(f"WhatsApp refused the message: {text}{tag}", retryable=False)


SENDER = WhatsAppSender()
