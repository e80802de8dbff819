"""The connectors service against a real MongoDB-protocol server: a call's events converge in any
order (recordings wait for their call, Twilio's dial-leg verdict wins), deferred work is retried
with back-off and never dropped. The broker is replaced by a recording publisher."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from services.connectors.adapters.twilio import twilio_signature
from services.connectors.adapters.zadarma import zadarma_signature
from services.connectors.main import ConnectorsService
from shared.clock import FrozenClock
from shared.events import Envelope, make_event
from shared.normalize import IDENTITY_KEY_PURPOSE, identity_digest
from tests.support.services import RecordingPublisher, connectors_service

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telephony"
CTX = {"tenant_id": "ten1", "user_id": "u1", "role": "admin", "settings": {}}


def captured(publisher: RecordingPublisher) -> list[dict[str, Any]]:
    return [e.payload for e in publisher.of("interaction.captured")]


@pytest.fixture
async def svc(mongo_url: str, namespace: str) -> AsyncIterator[ConnectorsService]:
    clock = FrozenClock(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    async with connectors_service(mongo_url, namespace, clock, public_url="https://crm.example") as service:
        yield service


def published(svc: ConnectorsService) -> RecordingPublisher:
    return svc.rt.publisher  # type: ignore[return-value]


async def channel(svc: ConnectorsService, kind: str, secrets: dict[str, str]) -> dict[str, Any]:
    body = {"kind": kind, "name": kind, "secrets": secrets, "intake": "auto"}
    return await svc.create_channel(CTX, {"body": body})


def hook_event(ch: dict[str, Any], headers: dict[str, str], body: bytes, url: str | None = None) -> Envelope:
    return make_event(
        "hook.received",
        tenant_id="ten1",
        producer="connectors",
        payload={
            "channel_id": ch["id"],
            "method": "POST",
            "url": url or ch["webhook_url"],
            "subpath": "",
            "query": "",
            "headers": {k.lower(): v for k, v in headers.items()},
            "body_b64": base64.b64encode(body).decode(),
            "received_at": "2026-11-27T15:00:00+00:00",
        },
    )


def zadarma_event(ch: dict[str, Any], params: dict[str, str]) -> Envelope:
    sig = zadarma_signature("zd", params["event"], params)
    form = {"content-type": "application/x-www-form-urlencoded", "signature": sig}
    return hook_event(ch, form, urlencode(params).encode())


def twilio_event(ch: dict[str, Any], params: dict[str, str]) -> Envelope:
    sig = twilio_signature("tw", ch["webhook_url"], list(params.items()))
    form = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": sig}
    return hook_event(ch, form, urlencode(params).encode())


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


async def test_recording_before_its_call_waits_then_joins_with_the_callers_phone(
    svc: ConnectorsService,
) -> None:
    zd = fixture("zadarma")
    ch = await channel(svc, "zadarma", {"api_secret": "zd"})
    svc.retry_first_s = 2.0

    await svc.on_hook_received(zadarma_event(ch, zd["notify_record"]))
    assert captured(published(svc)) == []  # no call known yet: nothing to join, nothing invented
    assert await svc.db.deferred.count_documents({}) == 1

    await svc.on_hook_received(zadarma_event(ch, zd["notify_end"]))
    [end] = captured(published(svc))
    assert end["sender"]["phones"] == ["+79161234567"] and end["data"]["status"] == "answered"

    assert await svc.retry_deferred() == 0  # not due yet
    svc.clock.advance(3)  # type: ignore[attr-defined]
    assert await svc.retry_deferred() == 1
    rec = captured(published(svc))[-1]
    assert rec["sender"]["phones"] == ["+79161234567"]
    assert rec["subject_key"] == end["subject_key"] == f"zadarma:call:{zd['notify_end']['pbx_call_id']}"
    assert rec["data"]["recording_id"] == "1732716190.1234567"
    assert rec["direction"] == "in"
    assert await svc.db.deferred.count_documents({}) == 0


async def test_a_recording_whose_call_never_comes_backs_off_and_is_kept(svc: ConnectorsService) -> None:
    zd = fixture("zadarma")
    ch = await channel(svc, "zadarma", {"api_secret": "zd"})
    svc.retry_first_s = 2.0
    await svc.on_hook_received(zadarma_event(ch, zd["notify_record"]))
    for attempt, wait in ((1, 4), (2, 8), (3, 16)):
        svc.clock.advance(wait + 0.5)  # type: ignore[attr-defined]
        assert await svc.retry_deferred() == 0
        doc = await svc.db.deferred.find_one({})
        assert doc["attempts"] == attempt and not doc["failed"]
    assert captured(published(svc)) == []


async def test_twilio_parent_completed_after_missed_dial_leg_is_missed(svc: ConnectorsService) -> None:
    tw = fixture("twilio")
    ch = await channel(svc, "twilio", {"auth_token": "tw"})
    await svc.on_hook_received(twilio_event(ch, tw["dial_leg_no_answer"]))
    await svc.on_hook_received(twilio_event(ch, tw["inbound_parent_completed"]))
    dial, parent = captured(published(svc))
    assert dial["data"]["status"] == "missed" and dial["data"]["leg"] == "dial"
    assert parent["data"]["status"] == "missed" and parent["data"]["leg"] == "parent"
    assert "duration_s" not in parent["data"]  # the parent's 125 s were ringing/IVR, not a talk
    assert parent["summary"] == "Missed inbound call"
    assert parent["sender"]["name"] == "Ivan Petrov"


async def test_twilio_parent_completed_without_dial_verdict_stays_answered(svc: ConnectorsService) -> None:
    tw = fixture("twilio")
    ch = await channel(svc, "twilio", {"auth_token": "tw"})
    await svc.on_hook_received(twilio_event(ch, tw["dial_leg_ringing"]))
    await svc.on_hook_received(twilio_event(ch, tw["inbound_parent_completed"]))
    parent = captured(published(svc))[-1]
    assert parent["data"]["status"] == "answered" and parent["data"]["duration_s"] == 125


async def test_same_hook_event_twice_publishes_once(svc: ConnectorsService) -> None:
    zd = fixture("zadarma")
    ch = await channel(svc, "zadarma", {"api_secret": "zd"})
    env = zadarma_event(ch, zd["notify_end"])
    await svc.on_hook_received(env)
    await svc.on_hook_received(env)
    assert len(captured(published(svc))) == 1


# ---- enrichment (Meta Lead Ads) runs off the hooks queue ------------------------------------


def meta_event(ch: dict[str, Any], lead_id: str) -> Envelope:
    body = json.dumps(
        {
            "object": "page",
            "entry": [
                {"id": "1", "time": 1, "changes": [{"field": "leadgen", "value": {"leadgen_id": lead_id}}]}
            ],
        }
    ).encode()
    sig = hmac.new(b"app", body, hashlib.sha256).hexdigest()
    return hook_event(ch, {"content-type": "application/json", "x-hub-signature-256": f"sha256={sig}"}, body)


async def meta_channel(svc: ConnectorsService) -> dict[str, Any]:
    body = {
        "kind": "meta_leads",
        "name": "meta",
        "intake": "auto",
        "secrets": {"app_secret": "app", "verify_token": "v", "page_access_token": "tok"},
        "config": {"graph_base_url": "https://graph.facebook.com/v19.0"},
    }
    return await svc.create_channel(CTX, {"body": body})


async def test_meta_lead_is_enriched_by_the_deferred_loop_not_the_hook_consumer(
    svc: ConnectorsService,
) -> None:
    calls: list[httpx.Request] = []
    lead = json.loads((FIXTURES.parent / "forms" / "meta_lead_graph.json").read_text())

    def graph(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json=lead)

    svc.http = httpx.AsyncClient(transport=httpx.MockTransport(graph))
    ch = await meta_channel(svc)
    await svc.on_hook_received(meta_event(ch, "123123123123"))
    assert calls == [] and captured(published(svc)) == []  # the consumer only parked it
    assert await svc.retry_deferred() == 1  # due at once
    [item] = captured(published(svc))
    assert item["kind"] == "ad_lead" and item["sender"]["emails"] == ["joe@example.com"]
    assert calls[0].url.params["access_token"] == "tok"
    assert await svc.db.deferred.count_documents({}) == 0
    await svc.http.aclose()


async def test_meta_lead_not_readable_yet_backs_off_and_is_delivered_later(svc: ConnectorsService) -> None:
    ready = False
    lead = json.loads((FIXTURES.parent / "forms" / "meta_lead_graph.json").read_text())

    def graph(request: httpx.Request) -> httpx.Response:
        if not ready:  # Meta's "lead not yet available": a 4xx that is not worth a quick retry
            return httpx.Response(400, json={"error": {"code": 100}})
        return httpx.Response(200, json=lead)

    svc.http = httpx.AsyncClient(transport=httpx.MockTransport(graph))
    svc.retry_first_s = 2.0
    ch = await meta_channel(svc)
    await svc.on_hook_received(meta_event(ch, "123123123123"))
    assert await svc.retry_deferred() == 0
    doc = await svc.db.deferred.find_one({})
    assert doc["attempts"] == 1 and "400" in doc["reason"]
    ready = True
    assert await svc.retry_deferred() == 0  # not due for another 4 s
    svc.clock.advance(4.5)  # type: ignore[attr-defined]
    assert await svc.retry_deferred() == 1
    assert len(captured(published(svc))) == 1
    await svc.http.aclose()


# ---- a call with several legs -----------------------------------------------------------------


def asterisk_event(ch: dict[str, Any], cdr: dict[str, Any]) -> Envelope:
    body = json.dumps(cdr).encode()
    sig = hmac.new(b"ast", body, hashlib.sha256).hexdigest()
    return hook_event(ch, {"content-type": "application/json", "x-signature": f"sha256={sig}"}, body)


async def test_ring_group_leg_not_answered_after_another_leg_answered_keeps_the_call_answered(
    svc: ConnectorsService,
) -> None:
    answered = fixture("asterisk")["inbound_answered"]
    other_leg = {
        **answered,
        "dst": "102",
        "uniqueid": "1795874590.19",
        "disposition": "NO ANSWER",
        "billsec": "0",
        "sequence": "43",
    }
    ch = await channel(svc, "asterisk", {"hmac_secret": "ast"})
    await svc.on_hook_received(asterisk_event(ch, answered))
    await svc.on_hook_received(asterisk_event(ch, other_leg))
    first, second = captured(published(svc))
    assert first["data"]["status"] == "answered" and first["data"]["duration_s"] == 125
    assert second["subject_key"] == first["subject_key"]
    assert second["data"]["status"] == "answered"
    assert "duration_s" not in second["data"] and "disposition" not in second["data"]


async def test_twilio_simultaneous_dial_one_leg_answered_parent_stays_answered(
    svc: ConnectorsService,
) -> None:
    tw = fixture("twilio")
    ch = await channel(svc, "twilio", {"auth_token": "tw"})
    picked = {
        **tw["dial_leg_no_answer"],
        "CallSid": "CA55555555555555555555555555555555",
        "CallStatus": "completed",
        "CallDuration": "118",
    }
    await svc.on_hook_received(twilio_event(ch, picked))
    await svc.on_hook_received(twilio_event(ch, tw["dial_leg_no_answer"]))
    await svc.on_hook_received(twilio_event(ch, tw["inbound_parent_completed"]))
    statuses = [p["data"]["status"] for p in captured(published(svc))]
    assert statuses == ["answered", "answered", "answered"]


async def test_contact_erased_forgets_the_calls_kept_under_the_persons_phone(svc: ConnectorsService) -> None:
    answered = fixture("asterisk")["inbound_answered"]
    stranger = {**answered, "uniqueid": "1795874777.1", "linkedid": "1795874777.1", "src": "79035550000"}
    stranger["clid"] = '"" <79035550000>'
    ch = await channel(svc, "asterisk", {"hmac_secret": "ast"})
    await svc.on_hook_received(asterisk_event(ch, answered))
    await svc.on_hook_received(asterisk_event(ch, stranger))
    person = captured(published(svc))[0]["sender"]["phones"][0]
    assert await svc.db.calls.count_documents({"tenant_id": "ten1"}) == 2

    # another tenant's erase of the same number forgets nothing here
    key = svc.rt.secrets.derive(IDENTITY_KEY_PURPOSE)
    keys_elsewhere = [identity_digest("ten2", person, key)]
    await svc.on_contact_erased(
        make_event(
            "contact.erased",
            tenant_id="ten2",
            producer="contacts",
            payload={"contact_id": "c9", "identity_keys": keys_elsewhere},
        )
    )
    assert await svc.db.calls.count_documents({"tenant_id": "ten1"}) == 2

    keys = [identity_digest("ten1", person, key), identity_digest("ten1", "x@example.com", key)]
    await svc.on_contact_erased(
        make_event(
            "contact.erased",
            tenant_id="ten1",
            producer="contacts",
            payload={"contact_id": "c1", "identity_keys": keys},
        )
    )
    left = await svc.db.calls.find({"tenant_id": "ten1"}).to_list(10)
    assert [c["_id"] for c in left] == ["ten1:asterisk:call:1795874777.1"]
