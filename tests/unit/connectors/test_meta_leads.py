"""Meta Lead Ads: hub.challenge handshake, X-Hub-Signature-256, Graph API enrichment, retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from services.connectors.adapters.base import (
    ChannelView,
    HookError,
    HookOutcome,
    RawRequest,
    RetryLater,
)
from services.connectors.adapters.meta_leads import ADAPTER, MetaLeadsAdapter
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "forms"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
APP_SECRET = "app-secret"
GRAPH = "https://graph.test/v19.0"
FAST = MetaLeadsAdapter(attempts=3, wait_initial_s=0.001, wait_max_s=0.002, jitter_s=0.001)


def channel(secrets: dict | None = None) -> ChannelView:
    return ChannelView(
        id="mt1",
        tenant_id="t1",
        kind="meta_leads",
        config={"graph_base_url": GRAPH},
        secrets=secrets
        if secrets is not None
        else {"app_secret": APP_SECRET, "verify_token": "vt-123", "page_access_token": "PAT"},
    )


def get(query: str) -> RawRequest:
    return RawRequest("GET", f"https://crm.example.com/hooks/mt1?{query}", "", query, {}, b"")


def post(body: bytes, secret: str | None = APP_SECRET) -> RawRequest:
    headers = {"content-type": "application/json"}
    if secret is not None:
        sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers["x-hub-signature-256"] = f"sha256={sig}"
    return RawRequest("POST", "https://crm.example.com/hooks/mt1", "", "", headers, body)


def notification() -> bytes:
    return (FIXTURES / "meta_leadgen.json").read_bytes()


def graph_lead() -> dict:
    return json.loads((FIXTURES / "meta_lead_graph.json").read_text())


def test_adapter_kind():
    assert isinstance(ADAPTER, MetaLeadsAdapter) and ADAPTER.kind == "meta_leads"


def test_verification_echoes_challenge_exactly():
    out = ADAPTER.handle(
        channel(), get("hub.mode=subscribe&hub.verify_token=vt-123&hub.challenge=1158201444"), NOW
    )
    assert out.response.status == 200
    assert out.response.body == b"1158201444"
    assert out.response.content_type.startswith("text/plain")
    assert out.durable is False and out.items == ()


def test_verification_with_wrong_token_is_403():
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), get("hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"), NOW)
    assert info.value.status == 403


def test_leadgen_notification_needs_enrichment():
    out = ADAPTER.handle(channel(), post(notification()), NOW)
    assert out.response.status == 200
    assert out.durable and out.needs_enrichment and out.items == ()
    assert out.context["leadgen_ids"] == ["123123123123"]
    assert out.context["form_ids"] == ["567567567567"]
    assert out.context["ad_ids"] == ["890890890890"]
    json.dumps(out.context)  # storable as is


def test_bad_signature_is_401():
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), post(notification(), secret="other"), NOW)
    assert info.value.status == 401
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), post(notification(), secret=None), NOW)
    assert info.value.status == 401


def test_malformed_notifications():
    for body, status in [(b'{"object": "pa', 400), (b'{"object": "page", "entry": {}}', 422)]:
        with pytest.raises(HookError) as info:
            ADAPTER.handle(channel(), post(body), NOW)
        assert info.value.status == status
    bad_id = {"object": "page", "entry": [{"changes": [{"field": "leadgen", "value": {}}]}]}
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), post(json.dumps(bad_id).encode()), NOW)
    assert info.value.status == 422 and "leadgen_id" in info.value.errors


def test_other_objects_and_fields_are_ignored():
    out = ADAPTER.handle(channel(), post(b'{"object": "user", "entry": []}'), NOW)
    assert out.discarded == "ignored" and not out.needs_enrichment
    feed = {"object": "page", "entry": [{"changes": [{"field": "feed", "value": {}}]}]}
    out = ADAPTER.handle(channel(), post(json.dumps(feed).encode()), NOW)
    assert out.discarded == "ignored"


def _outcome() -> HookOutcome:
    return ADAPTER.handle(channel(), post(notification()), NOW)


async def test_enrich_retries_500_and_429_then_captures_the_lead():
    calls: list[httpx.Request] = []

    def responder(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) == 1:
            return httpx.Response(500, json={"error": {"message": "oops"}})
        if len(calls) == 2:
            return httpx.Response(429, json={"error": {"code": 4}})
        return httpx.Response(200, json=graph_lead())

    async with httpx.AsyncClient(transport=httpx.MockTransport(responder)) as http:
        items = await FAST.enrich(channel(), _outcome(), http, NOW)
    assert len(calls) == 3
    assert calls[-1].url.path == "/v19.0/123123123123"
    assert calls[-1].url.params["access_token"] == "PAT"
    (item,) = items
    assert item.kind == "ad_lead" and item.direction == "in"
    assert item.idempotency_key == "meta:123123123123"
    assert item.sender.name == "Joe Example"
    assert item.sender.phones == ("+14155550142",)
    assert item.sender.emails == ("joe@example.com",)
    assert item.utm["utm_source"] == "facebook"
    assert item.utm["utm_campaign"] == "Autumn leads"
    assert item.data["fields"]["car_make"] == "Honda"
    assert item.data["form_id"] == "567567567567"
    assert item.data["ad_id"] == "890890890890"
    assert item.occurred_at == datetime(2015, 2, 28, 8, 49, 14, tzinfo=UTC)


async def test_enrich_network_error_then_success():
    state = {"n": 0}

    def responder(req: httpx.Request) -> httpx.Response:
        state["n"] += 1
        if state["n"] == 1:
            raise httpx.ConnectError("down", request=req)
        return httpx.Response(200, json=graph_lead())

    async with httpx.AsyncClient(transport=httpx.MockTransport(responder)) as http:
        items = await FAST.enrich(channel(), _outcome(), http, NOW)
    assert len(items) == 1 and state["n"] == 2


async def test_enrich_always_failing_raises_retry_later():
    state = {"n": 0}

    def responder(req: httpx.Request) -> httpx.Response:
        state["n"] += 1
        return httpx.Response(503)

    async with httpx.AsyncClient(transport=httpx.MockTransport(responder)) as http:
        with pytest.raises(RetryLater):
            await FAST.enrich(channel(), _outcome(), http, NOW)
    assert state["n"] == 3  # a few quick attempts, then give the lead back


async def test_enrich_client_error_is_retry_later_without_hammering():
    state = {"n": 0}

    def responder(req: httpx.Request) -> httpx.Response:
        state["n"] += 1
        return httpx.Response(400, json={"error": {"message": "Unsupported get request"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(responder)) as http:
        with pytest.raises(RetryLater):
            await FAST.enrich(channel(), _outcome(), http, NOW)
    assert state["n"] == 2  # the full field list, then the basic one; no back-off loop


async def test_enrich_falls_back_to_basic_fields_when_the_rich_list_is_refused():
    seen: list[str] = []

    def responder(req: httpx.Request) -> httpx.Response:
        seen.append(req.url.params["fields"])
        if "campaign_name" in req.url.params["fields"]:
            return httpx.Response(400, json={"error": {"code": 100}})
        lead = {k: v for k, v in graph_lead().items() if k not in ("campaign_name", "ad_name")}
        return httpx.Response(200, json=lead)

    async with httpx.AsyncClient(transport=httpx.MockTransport(responder)) as http:
        (item,) = await FAST.enrich(channel(), _outcome(), http, NOW)
    assert len(seen) == 2 and "field_data" in seen[1] and "campaign_name" not in seen[1]
    assert item.sender.emails == ("joe@example.com",)
    assert item.utm == {"utm_source": "facebook", "utm_medium": "paid_social"}


async def test_enrich_other_client_errors_are_retry_later_at_once():
    state = {"n": 0}

    def responder(req: httpx.Request) -> httpx.Response:
        state["n"] += 1
        return httpx.Response(403, json={"error": {"code": 200}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(responder)) as http:
        with pytest.raises(RetryLater):
            await FAST.enrich(channel(), _outcome(), http, NOW)
    assert state["n"] == 1


async def test_enrich_without_page_token_is_retry_later():
    ch = channel({"app_secret": APP_SECRET})
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as h:
        with pytest.raises(RetryLater):
            await FAST.enrich(ch, _outcome(), h, NOW)


async def test_instagram_platform_sets_utm_source():
    lead = graph_lead() | {"platform": "ig"}

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=lead))
    ) as http:
        (item,) = await FAST.enrich(channel(), _outcome(), http, NOW)
    assert item.utm["utm_source"] == "instagram"


def test_mutated_payloads_give_a_hook_error_or_a_clean_record():
    def run(body):
        return ADAPTER.handle(channel(), post(body), NOW)

    for doc in mutations(json.loads(notification()), random.Random(42), 300):
        try:
            out = run(json.dumps(doc).encode())
        except HookError as exc:
            assert exc.status in (400, 401, 415, 422)
            continue
        for item in out.items:
            assert item.occurred_at.tzinfo is not None
            json.dumps(item.data)
            assert all(isinstance(v, str) for v in item.utm.values())


def test_channel_without_app_secret_accepts_no_notification():
    ch = channel({"verify_token": "vt-123", "page_access_token": "PAT"})
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch, post(notification()), NOW)
    assert info.value.status == 401
