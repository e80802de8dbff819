"""Meta (Facebook / Instagram) Lead Ads via the ``leadgen`` page webhook and the Graph API.

Handshake: Meta verifies the callback URL with ``GET ?hub.mode=subscribe&hub.verify_token=...
&hub.challenge=...``; when the token equals ``secrets.verify_token`` we echo ``hub.challenge`` as
plain text (nothing durable), otherwise 403.

Notifications: ``POST`` JSON ``{"object": "page", "entry": [{"id", "time", "changes":
[{"field": "leadgen", "value": {"leadgen_id", "page_id", "form_id", "ad_id", "adgroup_id",
"created_time"}}]}]}``, signed with ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
body keyed with the app secret>`` (always required: a channel without ``secrets.app_secret``
accepts no notification). The notification
holds no personal data: ``handle`` answers 200 with ``needs_enrichment=True`` and
``context["leads"]``; ``enrich`` then reads each lead from
``GET {config.graph_base_url}/{leadgen_id}?access_token=<secrets.page_access_token>`` with a
per-request timeout and a few quick tenacity retries (exponential back-off with jitter) on 5xx,
429 and network errors; a 400 to the full field list is retried once with the basic fields
(``id,created_time,field_data,ad_id,form_id``). Anything still failing raises
:class:`RetryLater`: a lead is never dropped.

Each lead becomes an ``ad_lead``: ``field_data`` ``[{name, values}]`` → ``data.fields`` (values
joined with ``", "``), ``full_name``/``first_name``+``last_name``, ``phone_number``, ``email`` → the
sender; idempotency key ``meta:<leadgen_id>``; ``utm_source`` ``facebook`` (``instagram`` when the
lead's ``platform`` is ``ig``), ``utm_medium`` ``paid_social``, ``utm_campaign`` the campaign name
and ``utm_content`` the ad name when the Graph API returns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from . import _form_util as fu
from . import _meta as meta
from .base import (
    Captured,
    ChannelView,
    HookOutcome,
    RawRequest,
    RetryLater,
)

DEFAULT_GRAPH_BASE_URL = "https://graph.facebook.com/v19.0"
LEAD_FIELDS = (
    "id,created_time,field_data,ad_id,ad_name,adset_id,adset_name,"
    "campaign_id,campaign_name,form_id,platform,is_organic"
)
# Fields every token with leads_retrieval can read; asked for when the richer list is refused
# (campaign and ad names need ads permissions on some pages).
BASIC_LEAD_FIELDS = "id,created_time,field_data,ad_id,form_id"
MAX_LEADS_PER_DELIVERY = 100


class _Transient(Exception):
    """A failure worth a quick retry (5xx, 429, network)."""


class _FieldsRefused(Exception):
    """Graph answered 400 (e.g. a field the token may not read)."""


class MetaLeadsAdapter:
    """Adapter for ``kind = "meta_leads"``.

    ``attempts``, ``wait_initial_s``, ``wait_max_s`` and ``timeout_s`` tune the Graph API calls
    (tests pass tiny waits).
    """

    kind = "meta_leads"

    def __init__(
        self,
        *,
        attempts: int = 4,
        wait_initial_s: float = 0.5,
        wait_max_s: float = 4.0,
        jitter_s: float = 0.5,
        timeout_s: float = 10.0,
    ) -> None:
        self.attempts = attempts
        self.wait_initial_s = wait_initial_s
        self.wait_max_s = wait_max_s
        self.jitter_s = jitter_s
        self.timeout_s = timeout_s

    # ---- handle ----------------------------------------------------------------------------------

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        if request.method.upper() == "GET":
            return meta.verify_subscription(channel, request)
        entries = meta.signed_entries(channel, request, "page")
        if entries is None:
            return HookOutcome(response=fu.json_response(), discarded="ignored")
        leads: list[dict[str, str]] = []
        for entry in entries:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("changes"), list):
                continue
            for change in entry["changes"]:
                if not isinstance(change, Mapping) or change.get("field") != "leadgen":
                    continue
                value = change.get("value")
                if not isinstance(value, Mapping):
                    raise fu.invalid({"entry.changes.value": "value must be an object."})
                lead_id = value.get("leadgen_id")
                if not isinstance(lead_id, str | int) or isinstance(lead_id, bool):
                    raise fu.invalid({"leadgen_id": "leadgen_id is required."})
                lead_id_s = fu.safe_id(lead_id, 64)
                if not lead_id_s.isdigit():
                    raise fu.invalid({"leadgen_id": "leadgen_id must be a numeric id."})
                lead = {"leadgen_id": lead_id_s}
                for key in ("page_id", "form_id", "ad_id", "adgroup_id", "created_time"):
                    if value.get(key) is not None:
                        lead[key] = fu.safe_id(value[key], 64)
                if lead not in leads:
                    leads.append(lead)
        if not leads:
            return HookOutcome(response=fu.json_response(), discarded="ignored")
        if len(leads) > MAX_LEADS_PER_DELIVERY:
            raise fu.invalid({"entry": f"At most {MAX_LEADS_PER_DELIVERY} leads per delivery."})
        return HookOutcome(
            response=fu.json_response(),
            needs_enrichment=True,
            context={
                "leadgen_ids": [lead["leadgen_id"] for lead in leads],
                "form_ids": sorted({lead["form_id"] for lead in leads if "form_id" in lead}),
                "ad_ids": sorted({lead["ad_id"] for lead in leads if "ad_id" in lead}),
                "leads": leads,
            },
        )

    # ---- enrich ----------------------------------------------------------------------------------

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        leads = outcome.context.get("leads") or [
            {"leadgen_id": i} for i in outcome.context.get("leadgen_ids", [])
        ]
        if not leads:
            return ()
        token = channel.secrets.get("page_access_token")
        if not token:
            raise RetryLater("secrets.page_access_token is not configured.")
        base = str(channel.config.get("graph_base_url") or DEFAULT_GRAPH_BASE_URL).rstrip("/")
        items: list[Captured] = []
        for lead in leads:
            doc = await self._fetch(http, f"{base}/{lead['leadgen_id']}", token)
            items.append(self._captured(lead, doc, now))
        return tuple(items)

    async def _fetch(self, http: httpx.AsyncClient, url: str, token: str) -> Mapping[str, Any]:
        """The lead document; the full field list first, the basic one if Graph refuses it."""
        try:
            return await self._fetch_fields(http, url, token, LEAD_FIELDS)
        except _FieldsRefused:
            try:
                return await self._fetch_fields(http, url, token, BASIC_LEAD_FIELDS)
            except _FieldsRefused as exc:
                raise RetryLater("Graph API refused to read the lead (HTTP 400).") from exc

    async def _fetch_fields(
        self, http: httpx.AsyncClient, url: str, token: str, fields: str
    ) -> Mapping[str, Any]:
        async def once() -> Mapping[str, Any]:
            try:
                resp = await http.get(
                    url,
                    params={"access_token": token, "fields": fields},
                    timeout=self.timeout_s,
                )
            except httpx.HTTPError as exc:  # timeouts, connection errors
                raise _Transient(type(exc).__name__) from exc
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Transient(f"HTTP {resp.status_code}")
            if resp.status_code == 400:
                raise _FieldsRefused()
            if resp.status_code != 200:
                raise RetryLater(f"Graph API answered HTTP {resp.status_code} for a lead.")
            try:
                doc = resp.json()
            except ValueError as exc:
                raise RetryLater("Graph API answered with invalid JSON.") from exc
            if not isinstance(doc, Mapping):
                raise RetryLater("Graph API answered with a non-object.")
            return doc

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(max(1, self.attempts)),
                wait=wait_exponential_jitter(
                    multiplier=self.wait_initial_s, max=self.wait_max_s, jitter=self.jitter_s
                ),
                retry=retry_if_exception_type(_Transient),
                reraise=True,
            ):
                with attempt:
                    return await once()
        except _Transient as exc:
            raise RetryLater(f"Graph API unavailable after {self.attempts} attempts: {exc}") from exc
        raise RetryLater("Graph API retries exhausted.")  # pragma: no cover - loop always returns

    def _captured(self, lead: Mapping[str, str], doc: Mapping[str, Any], now: datetime) -> Captured:
        fields: dict[str, str] = {}
        for entry in fu.lst(doc.get("field_data")):
            if not isinstance(entry, Mapping) or not entry.get("name"):
                continue
            values = entry.get("values")
            vals = values if isinstance(values, list) else [values]
            name = fu.clean_text(str(entry["name"]), fu.MAX_KEY_CHARS)
            fields[name] = ", ".join(t for t in (fu.scalar_text(v) for v in vals) if t)
            if len(fields) >= fu.MAX_FIELDS:
                break
        sender = fu.sender_from_fields(fu.FieldIndex(fields))
        platform = str(doc.get("platform") or "").lower()
        utm = {"utm_source": "instagram" if platform == "ig" else "facebook"}
        utm["utm_medium"] = "paid_social"
        if doc.get("campaign_name"):
            utm["utm_campaign"] = fu.clean_text(str(doc["campaign_name"]), 500)
        if doc.get("ad_name"):
            utm["utm_content"] = fu.clean_text(str(doc["ad_name"]), 500)
        lead_id = lead["leadgen_id"]
        form_id = fu.scalar_text(doc.get("form_id") or lead.get("form_id")) or None
        ad_id = fu.scalar_text(doc.get("ad_id") or lead.get("ad_id")) or None
        when = fu.parse_time(doc.get("created_time"), fu.parse_time(lead.get("created_time"), now))
        return Captured(
            idempotency_key=f"meta:{lead_id}",
            kind="ad_lead",
            direction="in",
            occurred_at=when,
            sender=sender,
            summary="Lead ad (Facebook)" if platform != "ig" else "Lead ad (Instagram)",
            data={
                "fields": fields,
                "utm": dict(utm),
                "leadgen_id": lead_id,
                "form_id": form_id,
                "ad_id": ad_id,
                "page_id": lead.get("page_id"),
                "campaign_id": fu.scalar_text(doc.get("campaign_id")) or None,
                "campaign_name": fu.scalar_text(doc.get("campaign_name")) or None,
                "is_organic": bool(doc.get("is_organic")) if "is_organic" in doc else None,
            },
            utm=utm,
        )


ADAPTER = MetaLeadsAdapter()
