"""Tilda (tilda.cc) form webhooks.

Tilda posts every form submission as ``application/x-www-form-urlencoded`` (JSON is accepted too)
with the block's field names (``Name``, ``Phone``, ``Email`` and custom ones), plus ``tranid``
(unique submission id), ``formid`` (the form block), optionally ``formname``, ``utm_*`` hidden
fields and ``COOKIES`` (when "send cookies" is on; its ``TILDAUTM`` cookie holds the first-touch
UTM as ``utm_source=...|||utm_medium=...``). When the webhook is connected Tilda sends the probe
``test=test`` and expects 200; it must answer within 5 s, so we only verify and parse here.

Security: Tilda lets the site owner attach an API key to the webhook, sent either as a header or as
a body field. ``secrets.token``, when set, must match one of: header ``config.api_key_header``
(default ``api-key``), body field ``config.api_key_field`` (default ``api_key``), ``X-CRM-Token`` or
``?token=``. The key field is removed from ``data.fields``.

The response body is ``ok``. Idempotency key: ``tilda:<channel id>:<tranid>`` (else the body hash).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from . import _form_util as fu
from .base import Captured, ChannelView, HookError, HookOutcome, RawRequest, constant_time_equal
from .form import FormAdapter

DEFAULT_KEY_FIELD = "api_key"
DEFAULT_KEY_HEADER = "api-key"


def _tilda_utm(cookies: str | None) -> dict[str, str]:
    """UTM from Tilda's ``TILDAUTM`` cookie (``utm_source=x|||utm_medium=y``, URL-encoded)."""
    if not cookies:
        return {}
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip().upper() != "TILDAUTM":
            continue
        found: dict[str, str] = {}
        for pair in unquote(value).split("|||"):
            k, _, v = pair.partition("=")
            key = k.strip().lower()
            if key in fu.UTM_KEYS and v.strip() and key not in found:
                found[key] = fu.clean_text(unquote(v), 500)
        return found
    return {}


class TildaAdapter:
    """Adapter for ``kind = "tilda"``."""

    kind = "tilda"

    def _check_key(self, channel: ChannelView, request: RawRequest, fields: dict[str, str]) -> None:
        expected = channel.secrets.get("token")
        if not expected:
            return
        header_name = str(channel.config.get("api_key_header") or DEFAULT_KEY_HEADER).lower()
        field_name = str(channel.config.get("api_key_field") or DEFAULT_KEY_FIELD)
        candidates = [
            request.header(header_name),
            request.header("x-crm-token"),
            request.query_params().get("token"),
            next((v for k, v in fields.items() if k.lower() == field_name.lower()), None),
        ]
        if not any(c and constant_time_equal(c.strip(), expected) for c in candidates):
            raise HookError(401, "Invalid API key", "The Tilda API key is missing or wrong.")

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        fields = fu.parse_form_fields(request, allow_json=True)
        field_name = str(channel.config.get("api_key_field") or DEFAULT_KEY_FIELD).lower()
        is_probe = fields.get("test") == "test" and not any(
            k for k in fields if k.lower() not in ("test", field_name)
        )
        if is_probe:
            # The probe proves the URL works; a key that is present must still be right.
            header_name = str(channel.config.get("api_key_header") or DEFAULT_KEY_HEADER)
            presented = (
                any(k.lower() == field_name for k in fields)
                or request.header(header_name) is not None
                or request.header("x-crm-token") is not None
                or "token" in request.query_params()
            )
            if channel.secrets.get("token") and presented:
                self._check_key(channel, request, fields)
            return HookOutcome(response=fu.text_response("ok"), discarded="test")
        self._check_key(channel, request, fields)
        fields = {k: v for k, v in fields.items() if k.lower() != field_name}

        idx = fu.FieldIndex(fields)
        tranid = idx.get_exact("tranid")
        form_name = idx.get_exact("formname", "form_name") or idx.get_exact("formid")
        outcome = FormAdapter().outcome_from_fields(
            channel,
            request,
            fields,
            now,
            key_prefix="tilda",
            submission_id=tranid,
            form_name=form_name,
        )
        items: list[Captured] = []
        for item in outcome.items:
            utm = item.utm or _tilda_utm(idx.get_exact("cookies"))
            data: dict[str, Any] = dict(item.data)
            data["utm"] = dict(utm)
            data["form_id"] = idx.get_exact("formid")
            items.append(replace(item, data=data, utm=dict(utm)))
        return HookOutcome(response=fu.text_response("ok"), items=tuple(items), discarded=outcome.discarded)

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return outcome.items


ADAPTER = TildaAdapter()
