"""Webflow ``form_submission`` webhooks (Data API v2, v1 payloads accepted too).

Signature (Webflow docs, "Validating request signatures"): ``x-webflow-timestamp`` is the send time
in Unix epoch milliseconds and ``x-webflow-signature`` the hex HMAC-SHA256, keyed with the webhook's
secret (site-token webhooks) or the OAuth app's client secret, of ``<timestamp>:<raw body>``. When
``secrets.secret`` is set both headers are required and a timestamp more than
``config.replay_window_s`` (default 300 s) away from ``now`` is refused as a replay (401).

Payload: ``{"triggerType": "form_submission", "payload": {"name", "siteId", "data": {...},
"submittedAt", "id", "formId", "formElementId", "pageUrl"?}}``. ``data`` is mapped like the generic
form (``First Name`` + ``Last Name``, ``email``, ``Phone Number``...). Idempotency key
``webflow:<submission id>``. Other trigger types are answered 200 with ``discarded="ignored"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import _form_util as fu
from .base import (
    Captured,
    ChannelView,
    HookOutcome,
    RawRequest,
    bad_signature,
    constant_time_equal,
    hmac_sha256_hex,
)

DEFAULT_REPLAY_WINDOW_S = 300


def verify_webflow_signature(
    request: RawRequest, secret: str, now: datetime, window_s: float = DEFAULT_REPLAY_WINDOW_S
) -> None:
    ts_raw = (request.header("x-webflow-timestamp") or "").strip()
    sig = (request.header("x-webflow-signature") or "").strip().lower()
    if not ts_raw or not sig:
        raise bad_signature("x-webflow-timestamp and x-webflow-signature headers are required.")
    if not ts_raw.isdigit() or len(ts_raw) > 16:
        raise bad_signature("x-webflow-timestamp is not a Unix epoch timestamp.")
    ts = int(ts_raw)
    sent_s = ts / 1000 if ts > 10**11 else float(ts)  # milliseconds (documented) or seconds
    if abs(now.timestamp() - sent_s) > window_s:
        raise bad_signature("x-webflow-timestamp is outside the replay window.")
    expected = hmac_sha256_hex(secret, ts_raw.encode() + b":" + request.body)
    if not constant_time_equal(sig, expected):
        raise bad_signature()


def _window(value: Any) -> float:
    """``config.replay_window_s`` when it is a sane number of seconds (1 s .. 1 h), else 300."""
    try:
        window = float(value)
    except (TypeError, ValueError):
        return DEFAULT_REPLAY_WINDOW_S
    if not math.isfinite(window) or not 1 <= window <= 3600:
        return DEFAULT_REPLAY_WINDOW_S
    return window


class WebflowAdapter:
    """Adapter for ``kind = "webflow"``."""

    kind = "webflow"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        secret = channel.secrets.get("secret")
        if secret:
            window_s = _window(channel.config.get("replay_window_s"))
            verify_webflow_signature(request, secret, now, window_s)
        body = fu.require_json(request)
        if "triggerType" in body:
            if body.get("triggerType") != "form_submission":
                return HookOutcome(response=fu.json_response(), discarded="ignored")
            payload = body.get("payload")
        else:  # v1 webhooks post the submission itself
            payload = body
        if not isinstance(payload, Mapping):
            raise fu.invalid({"payload": "payload must be an object."})
        data = payload.get("data")
        if not isinstance(data, Mapping):
            raise fu.invalid({"payload.data": "data must be an object of submitted fields."})

        fields = fu.flatten(data)
        field_map = channel.config.get("field_map")
        idx = fu.FieldIndex(fields, field_map if isinstance(field_map, Mapping) else None)
        sender = fu.sender_from_fields(idx)
        if not fu.has_contact(sender):
            raise fu.no_contact()

        page_url = payload.get("pageUrl") or idx.get_exact(*fu.PAGE_URL_KEYS)
        page_url_s = fu.clean_text(str(page_url), 2000) if page_url else None
        utm = fu.collect_utm(idx, page_url_s, None)
        sub_id = payload.get("id") or payload.get("_id")
        key = (
            f"webflow:{fu.safe_id(sub_id)}"
            if sub_id
            else f"webflow:{channel.id}:sha256:{fu.body_digest(request.body)}"
        )
        name = fu.scalar_text(payload.get("name")) or "Webflow form"
        item = Captured(
            idempotency_key=key,
            kind="form",
            direction="in",
            occurred_at=fu.parse_time(payload.get("submittedAt") or payload.get("d"), now),
            sender=sender,
            summary=f"Form submission: {fu.clean_text(name, 200)}",
            data={
                "fields": fields,
                "utm": dict(utm),
                "page_url": page_url_s,
                "form_name": name,
                "form_id": fu.scalar_text(payload.get("formId")) or None,
                "site_id": fu.scalar_text(payload.get("siteId") or payload.get("site")) or None,
                "submission_id": fu.safe_id(sub_id) if sub_id else None,
            },
            utm=dict(utm),
        )
        return HookOutcome(response=fu.json_response(), items=(item,))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return outcome.items


ADAPTER = WebflowAdapter()
