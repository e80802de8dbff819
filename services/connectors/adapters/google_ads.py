"""Google Ads lead form webhooks.

Google posts JSON (the documented ``WebhookLead`` message): ``lead_id``, ``user_column_data``
``[{column_id: FULL_NAME/FIRST_NAME/LAST_NAME/EMAIL/PHONE_NUMBER/WORK_EMAIL/...,
string_value, column_name}]``, ``api_version``, ``form_id``, ``campaign_id``, ``google_key``,
``is_test``, ``gcl_id``, ``adgroup_id``, ``creative_id``. ``google_key`` must equal ``secrets.key``
(compared in constant time; a channel without a key accepts nothing) else 401. ``is_test: true`` →
200 ``{}``, ``discarded="test"``, nothing created.

``data.fields`` maps each column's ``column_name`` (else its ``column_id``) to its value; the
sender comes from the column ids. Idempotency key ``google_ads:<lead_id>``; UTM ``google`` /
``cpc`` / ``<campaign_id>``. The answer is 200 ``{}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import _form_util as fu
from .base import Captured, ChannelView, HookOutcome, RawRequest, bad_signature, constant_time_equal

NAME_IDS = ("FULL_NAME",)
FIRST_IDS = ("FIRST_NAME",)
LAST_IDS = ("LAST_NAME",)
PHONE_IDS = ("PHONE_NUMBER", "WORK_PHONE")
EMAIL_IDS = ("EMAIL", "WORK_EMAIL")
EMPTY_JSON = b"{}"


class GoogleAdsAdapter:
    """Adapter for ``kind = "google_ads"``."""

    kind = "google_ads"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        body = fu.require_json(request)
        expected = channel.secrets.get("key") or ""
        got = body.get("google_key")
        if not expected or not isinstance(got, str) or not constant_time_equal(got, expected):
            raise bad_signature("google_key does not match the channel's key.")
        if body.get("is_test") is True:
            return HookOutcome(response=fu.json_response(EMPTY_JSON), discarded="test")

        lead_id = body.get("lead_id")
        if not isinstance(lead_id, str | int) or isinstance(lead_id, bool) or not str(lead_id):
            raise fu.invalid({"lead_id": "lead_id is required."})
        columns = body.get("user_column_data", [])
        if not isinstance(columns, list):
            raise fu.invalid({"user_column_data": "user_column_data must be a list."})
        if len(columns) > fu.MAX_FIELDS:
            raise fu.invalid({"fields": f"Too many fields (at most {fu.MAX_FIELDS})."})

        fields: dict[str, str] = {}
        by_id: dict[str, str] = {}
        for col in columns:
            if not isinstance(col, Mapping):
                continue
            col_id = fu.clean_text(str(col.get("column_id") or ""), fu.MAX_KEY_CHARS).upper()
            value = fu.scalar_text(col.get("string_value"))
            label = fu.clean_text(str(col.get("column_name") or ""), fu.MAX_KEY_CHARS) or col_id
            if not label:
                continue
            fields[label if label not in fields else f"{label} ({col_id})"] = value
            if col_id and value:
                by_id.setdefault(col_id, value)

        def first(ids: tuple[str, ...]) -> str | None:
            return next((by_id[i] for i in ids if by_id.get(i)), None)

        name = first(NAME_IDS) or " ".join(p for p in (first(FIRST_IDS), first(LAST_IDS)) if p)
        sender = fu.build_sender(
            name or None,
            [by_id.get(i) for i in PHONE_IDS],
            [by_id.get(i) for i in EMAIL_IDS],
        )
        if not fu.has_contact(sender):
            raise fu.no_contact()

        campaign_id = fu.scalar_text(body.get("campaign_id"))
        utm = {"utm_source": "google", "utm_medium": "cpc"}
        if campaign_id:
            utm["utm_campaign"] = campaign_id
        data: dict[str, Any] = {
            "fields": fields,
            "utm": dict(utm),
            "lead_id": fu.safe_id(lead_id),
            "form_id": fu.scalar_text(body.get("form_id")) or None,
            "campaign_id": campaign_id or None,
            "adgroup_id": fu.scalar_text(body.get("adgroup_id")) or None,
            "creative_id": fu.scalar_text(body.get("creative_id")) or None,
            "gcl_id": fu.scalar_text(body.get("gcl_id")) or None,
            "api_version": fu.scalar_text(body.get("api_version")) or None,
        }
        item = Captured(
            idempotency_key=f"google_ads:{fu.safe_id(lead_id)}",
            kind="ad_lead",
            direction="in",
            occurred_at=fu.parse_time(body.get("lead_submit_time"), now),
            sender=sender,
            summary="Lead form (Google Ads)",
            data=data,
            utm=utm,
        )
        return HookOutcome(response=fu.json_response(EMPTY_JSON), items=(item,))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return outcome.items


ADAPTER = GoogleAdsAdapter()
