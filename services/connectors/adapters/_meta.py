"""What every Meta webhook shares (Lead Ads on a page, the WhatsApp Cloud API): the verification
GET (``hub.mode``/``hub.verify_token``/``hub.challenge``), ``X-Hub-Signature-256`` over the raw
body with the app secret, and the ``{"object": ..., "entry": [...]}`` envelope."""

from __future__ import annotations

from typing import Any

from . import _form_util as fu
from .base import (
    ChannelView,
    HookError,
    HookOutcome,
    RawRequest,
    bad_signature,
    constant_time_equal,
    require_hmac_header,
)


def verify_subscription(channel: ChannelView, request: RawRequest) -> HookOutcome:
    """Echo ``hub.challenge`` when ``hub.verify_token`` is the channel's ``verify_token``."""
    q = request.query_params()
    if q.get("hub.mode") != "subscribe":
        raise HookError(400, "Not a verification request", "hub.mode=subscribe is required.")
    expected = channel.secrets.get("verify_token") or ""
    token = q.get("hub.verify_token") or ""
    if not expected or not constant_time_equal(token, expected):
        raise HookError(403, "Verification failed", "hub.verify_token does not match.")
    challenge = fu.clean_text(q.get("hub.challenge") or "", 200)
    return HookOutcome(response=fu.text_response(challenge), durable=False)


def signed_entries(channel: ChannelView, request: RawRequest, object_type: str) -> list[Any] | None:
    """The ``entry`` list of a signed delivery about ``object_type``; ``None`` when it is about
    another object (accepted and ignored)."""
    app_secret = channel.secrets.get("app_secret")
    if not app_secret:  # Meta signs every delivery: an unsigned channel accepts nothing
        raise bad_signature("secrets.app_secret is not configured for this channel.")
    require_hmac_header(request, app_secret, "x-hub-signature-256")
    body = fu.require_json(request)
    if body.get("object") != object_type:
        return None
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise fu.invalid({"entry": "entry must be a list."})
    return entries
