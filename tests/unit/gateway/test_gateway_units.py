"""Pure parts of the gateway: visibility, the live feed, webhook signing and back-off, the OpenAPI
completion, audit record ids, content-type and rate-limit rules."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.audit import record_id_of
from gateway.identity import Principal
from gateway.live import LiveFeed, sse_frame
from gateway.middleware import ContentType, RateLimit
from gateway.openapi import complete_openapi
from gateway.webhooks import WebhookSettings, delivery_id, retry_delay, sign
from shared.clock import new_id
from shared.events import Envelope

pytestmark = pytest.mark.unit


def event(tenant: str, event_type: str = "contact.created", **payload: Any) -> Envelope:
    event_id = new_id() + uuid.uuid4().hex[:4]
    return Envelope(
        event_id=event_id,
        event_type=event_type,
        occurred_at=datetime(2026, 11, 27, tzinfo=UTC),
        tenant_id=tenant,
        producer="test",
        correlation_id=event_id,
        payload={"contact_id": "c1", **payload},
    )


def manager(see_all: bool = False) -> Principal:
    return Principal("t1", "u1", "manager", "M", {"managers_see_all": see_all})


# ---- visibility ----------------------------------------------------------------------------------


def test_manager_sees_own_and_unowned_but_not_others_records_events() -> None:
    p = manager()
    assert p.may_see({"contact_id": "c", "owner_id": "u1"})
    assert p.may_see({"contact_id": "c", "owner_id": None})
    assert p.may_see({"user_id": "u9"})  # no owner field: not a record someone owns
    assert not p.may_see({"contact_id": "c", "owner_id": "u2"})
    assert not p.may_see({"task_id": "t", "assignee_id": "u2"})


def test_admin_and_see_all_managers_see_everything() -> None:
    assert Principal("t1", "a", "admin", "A").may_see({"owner_id": "u2"})
    assert manager(see_all=True).may_see({"owner_id": "u2", "assignee_id": "u3"})
    assert not Principal("t1", "v", "viewer", "V").may_see({"owner_id": "u2"})


# ---- live feed ------------------------------------------------------------------------------------


def test_backlog_resumes_after_the_last_event_id_and_only_for_that_tenant() -> None:
    feed = LiveFeed(buffer_size=10)
    a1, a2, a3 = (event("A") for _ in range(3))
    feed.publish(a1)
    feed.publish(event("B"))
    feed.publish(a2)
    feed.publish(a3)
    assert [e["event_id"] for e in feed.backlog("A", a1.event_id)] == [a2.event_id, a3.event_id]
    assert feed.backlog("A", a3.event_id) == []
    assert feed.backlog("A", None) == []
    assert [e["event_id"] for e in feed.backlog("A", "unknown")] == [a1.event_id, a2.event_id, a3.event_id]
    assert all(e["tenant_id"] == "B" for e in feed.backlog("B", "unknown"))


def test_ring_buffer_keeps_the_latest_and_drops_redeliveries() -> None:
    feed = LiveFeed(buffer_size=2)
    events = [event("A") for _ in range(3)]
    for e in events:
        feed.publish(e)
    feed.publish(events[2])
    assert [e["event_id"] for e in feed.backlog("A", "gone")] == [events[1].event_id, events[2].event_id]


def test_internal_captured_events_are_not_streamed() -> None:
    feed = LiveFeed()
    feed.publish(event("A", "interaction.captured"))
    assert feed.backlog("A", "x") == []


async def test_stream_sends_backlog_then_live_filtered_events_without_duplicates() -> None:
    feed = LiveFeed()
    first, missed = event("A", owner_id=None), event("A", owner_id="u1")
    feed.publish(first)
    feed.publish(missed)
    p = manager()
    gen = feed.stream("A", lambda _t, payload: p.may_see(payload), first.event_id, heartbeat_s=0.05)
    assert await anext(gen) == b"retry: 3000\n\n"
    assert await anext(gen) == sse_frame(feed.backlog("A", first.event_id)[0])
    hidden, shown = event("A", owner_id="u2"), event("A", owner_id="u1")
    feed.publish(missed)  # a redelivery of what the backlog already sent
    feed.publish(hidden)
    feed.publish(shown)
    nxt = await anext(gen)
    assert f"id: {shown.event_id}".encode() in nxt
    assert await asyncio.wait_for(anext(gen), 1) == b": keep-alive\n\n"
    assert feed.listeners() == 1
    await gen.aclose()
    assert feed.listeners() == 0


def test_sse_frame_format() -> None:
    e = event("A")
    frame = sse_frame({"event_id": e.event_id, "event_type": "contact.created", "payload": {"x": "Иван"}})
    text = frame.decode()
    assert text.startswith(f"id: {e.event_id}\nevent: contact.created\ndata: {{")
    assert text.endswith("\n\n") and "Иван" in text


# ---- webhooks ------------------------------------------------------------------------------------


def test_signature_is_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"a":1}'
    assert sign("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert sign("k", body) != sign("other", body)


def test_delivery_id_is_stable_per_subscription_and_event() -> None:
    assert delivery_id("s1", "e1") == delivery_id("s1", "e1")
    assert len({delivery_id("s1", "e1"), delivery_id("s2", "e1"), delivery_id("s1", "e2")}) == 3


def test_retry_delay_grows_exponentially_with_jitter_and_is_capped() -> None:
    s = WebhookSettings(backoff_s=10, max_backoff_s=300)
    for attempt, low in ((1, 10), (2, 20), (3, 40), (4, 80)):
        d = retry_delay(attempt, s)
        assert low <= d <= low + 10
    assert retry_delay(20, s) <= 300
    total = sum(retry_delay(n, WebhookSettings()) for n in range(1, 40))
    assert total > 24 * 3600  # retried for a day before failing, with the default policy


# ---- OpenAPI, audit, middleware rules -------------------------------------------------------------


def test_openapi_completion_adds_problem_answers_security_and_idempotency_header() -> None:
    schema = {
        "paths": {
            "/api/v1/things/{id}": {
                "patch": {
                    "requestBody": {"content": {}},
                    "responses": {"200": {}, "422": {"content": {"application/json": {}}}},
                }
            },
            "/api/v1/things": {"post": {"requestBody": {"content": {}}, "responses": {"201": {}}}},
            "/health": {"get": {"responses": {"200": {}}}},
        }
    }
    out = complete_openapi(schema)
    patch = out["paths"]["/api/v1/things/{id}"]["patch"]
    for status in ("401", "403", "404", "413", "415", "422", "429", "504"):
        assert "application/problem+json" in patch["responses"][status]["content"]
    assert "application/json" not in patch["responses"]["422"]["content"]
    assert patch["security"] == [{"bearer": []}]
    post = out["paths"]["/api/v1/things"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert out["paths"]["/health"]["get"]["responses"] == {"200": {}}
    assert "Problem" in out["components"]["schemas"]


def test_audit_record_id_from_path_or_created_body() -> None:
    assert record_id_of({"path_params": {"contact_id": "c1"}}, 200, b"") == "c1"
    assert record_id_of({"path_params": {}}, 201, b'{"id": "n1", "owner_id": "u"}') == "n1"
    assert record_id_of({"path_params": {}}, 201, b'{"tenant_id": "t", "user_id": "u2"}') == "u2"
    assert record_id_of({"path_params": {}}, 200, b'{"id": "x"}') is None
    assert record_id_of({}, 201, b"not json") is None


def test_content_type_rule_accepts_json_only_when_a_body_is_sent() -> None:
    ct = ContentType(app=None)  # type: ignore[arg-type]
    assert ct.acceptable("application/json; charset=utf-8")
    assert ct.acceptable("application/merge-patch+json")
    assert not ct.acceptable("text/plain")
    assert not ct.acceptable(None)
    assert ct.has_body({"headers": [(b"content-length", b"5")]})
    assert not ct.has_body({"headers": [(b"content-length", b"0")]})
    assert ct.has_body({"headers": [(b"transfer-encoding", b"chunked")]})


def test_token_bucket_allows_burst_then_asks_to_wait() -> None:
    rl = RateLimit(app=None, rate=2, burst=4)  # type: ignore[arg-type]
    assert [rl.take("k", 100.0) for _ in range(4)] == [0.0] * 4
    wait = rl.take("k", 100.0)
    assert wait == pytest.approx(0.5)
    assert rl.take("other", 100.0) == 0.0
    assert rl.take("k", 100.6) == 0.0


def test_openapi_documents_410_for_erased_contacts_and_409_for_every_write() -> None:
    schema = {
        "paths": {
            "/api/v1/contacts/{contact_id}": {
                "get": {"responses": {"200": {}}},
                "patch": {"requestBody": {"content": {}}, "responses": {"200": {}}},
                "delete": {"responses": {"204": {}}},
            },
            "/api/v1/deals/{deal_id}": {"get": {"responses": {"200": {}}}},
        }
    }
    paths = complete_openapi(schema)["paths"]
    contact = paths["/api/v1/contacts/{contact_id}"]
    assert {"410"} <= set(contact["get"]["responses"]) and "409" not in contact["get"]["responses"]
    assert {"409", "410"} <= set(contact["patch"]["responses"]) and "409" in contact["delete"]["responses"]
    assert "410" not in paths["/api/v1/deals/{deal_id}"]["get"]["responses"]


async def test_a_slow_client_is_told_it_overflowed_and_resumes_without_loss() -> None:
    """More events than a stream's queue while its client reads nothing: the stream sends what
    it holds, then an ``overflow`` event naming the last id, and ends; a reconnect with that
    ``Last-Event-ID`` gets every other event, in order, once."""
    feed = LiveFeed(buffer_size=100, listener_queue=5)
    gen = feed.stream("A", lambda _t, _p: True, None, heartbeat_s=5)
    assert await anext(gen) == b"retry: 3000\n\n"
    published = [event("A") for _ in range(30)]
    for e in published:
        feed.publish(e)  # never blocks, whatever the reader does
    frames = [chunk async for chunk in gen]  # ends by itself
    assert frames[-1].startswith(b"event: overflow\n")
    notice = json.loads(frames[-1].decode().split("data: ", 1)[1])
    got = [f.decode().split("\n", 1)[0].removeprefix("id: ") for f in frames[:-1]]
    assert got == [e.event_id for e in published[:5]]
    assert notice["last_event_id"] == got[-1] and notice["reason"] == "client_too_slow"
    assert feed.listeners() == 0

    resumed = feed.stream("A", lambda _t, _p: True, notice["last_event_id"], heartbeat_s=0.05)
    assert await anext(resumed) == b"retry: 3000\n\n"
    rest = []
    while (chunk := await anext(resumed)) != b": keep-alive\n\n":
        rest.append(chunk.decode().split("\n", 1)[0].removeprefix("id: "))
    await resumed.aclose()
    assert got + rest == [e.event_id for e in published]
