"""The webhook delivery worker against the real MongoDB-protocol server, with endpoints faked by
httpx.MockTransport: fan-out idempotency, isolation of a dead endpoint, retry then failure."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.webhooks import Webhooks, WebhookSettings, sign
from shared.clock import SystemClock, new_id
from shared.crypto import SecretBox
from shared.events import Envelope
from shared.mongo import mongo_client
from shared.netguard import UrlGuard

pytestmark = pytest.mark.integration


def envelope(tenant: str, event_type: str = "contact.updated") -> Envelope:
    event_id = new_id() + uuid.uuid4().hex[:4]
    return Envelope(
        event_id=event_id,
        event_type=event_type,
        occurred_at=datetime.now(UTC),
        tenant_id=tenant,
        producer="test",
        correlation_id=event_id,
        payload={"user_id": "u1", "role": "viewer"},
    )


class Endpoints:
    """``dead`` never answers; ``flaky`` fails twice per delivery; ``ok`` answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, httpx.Request]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.headers["host"]  # the URL itself goes to the address the guard checked
        did = request.headers["X-CRM-Delivery-Id"]
        self.calls.append((host, did, request))
        if host == "dead":
            await asyncio.sleep(30)
        if host == "flaky" and sum(1 for h, d, _ in self.calls if d == did) <= 2:
            return httpx.Response(503)
        if host == "broken":
            return httpx.Response(500)
        return httpx.Response(204)

    def to(self, host: str) -> list[tuple[str, str, httpx.Request]]:
        return [c for c in self.calls if c[0] == host]


@pytest.fixture
async def db(mongo_url: str) -> AsyncIterator[Any]:
    client = mongo_client(mongo_url)
    name = f"t{uuid.uuid4().hex[:10]}_gateway"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


async def public_dns(host: str, port: int) -> list[str]:
    """The endpoints' names resolve to a public address (the transport is faked anyway)."""
    return ["93.184.215.14"]


def make(db: Any, endpoints: Endpoints, **overrides: Any) -> Webhooks:
    settings = WebhookSettings(
        **{
            "backoff_s": 0.05,
            "max_backoff_s": 0.2,
            "timeout_s": 0.5,
            "concurrency": 4,
            "per_subscription": 2,
            "poll_s": 0.05,
            **overrides,
        }
    )
    return Webhooks(
        db,
        SecretBox(Fernet.generate_key()),
        SystemClock(),
        settings,
        transport=httpx.MockTransport(endpoints),
        guard=UrlGuard(resolver=public_dns),
    )


async def wait_for(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met")


async def test_fan_out_is_idempotent_and_stays_in_the_tenant(db: Any) -> None:
    hooks = make(db, Endpoints())
    a = await hooks.create("A", "u", "http://ok/a", ["contact.updated"], "secret-a", None)
    await hooks.create("A", "u", "http://ok/other", ["deal.won"], "secret-b", None)
    await hooks.create("B", "u", "http://ok/b", ["*"], "secret-c", None)
    env = envelope("A")
    await hooks.on_event(env)
    await hooks.on_event(env)  # the broker redelivers
    docs = await db.deliveries.find({}).to_list(100)
    assert [(d["tenant_id"], d["subscription_id"]) for d in docs] == [("A", a["id"])]


async def test_dead_endpoint_never_delays_a_healthy_one(db: Any) -> None:
    endpoints = Endpoints()
    # The dead endpoint holds each of its slots for 30 s: were it to hold the worker, the healthy
    # endpoint's 20 deliveries could not all be done within the 20 s waited for below.
    hooks = make(db, endpoints, timeout_s=60)
    await hooks.create("A", "u", "http://dead/x", ["*"], "secret-dead", None)
    healthy = await hooks.create("A", "u", "http://ok/x", ["*"], "secret-ok", None)
    for _ in range(20):
        await hooks.on_event(envelope("A"))
    hooks.start()
    try:

        async def healthy_done() -> bool:
            n = await db.deliveries.count_documents({"subscription_id": healthy["id"], "state": "delivered"})
            return bool(n == 20)

        await wait_for(healthy_done, timeout=20)
        # The dead endpoint only ever held its own slots.
        assert len(endpoints.to("dead")) <= 4
    finally:
        await hooks.stop()


async def test_retries_keep_the_delivery_id_and_body_and_sign_every_attempt(db: Any) -> None:
    endpoints = Endpoints()
    hooks = make(db, endpoints)
    sub = await hooks.create("A", "u", "http://flaky/x", ["contact.updated"], "secret-flaky", None)
    env = envelope("A")
    await hooks.on_event(env)
    hooks.start()
    try:

        async def delivered() -> bool:
            doc = await db.deliveries.find_one({"subscription_id": sub["id"]})
            return bool(doc and doc["state"] == "delivered")

        await wait_for(delivered, timeout=5)
    finally:
        await hooks.stop()
    calls = endpoints.to("flaky")
    assert len(calls) == 3 and len({did for _, did, _ in calls}) == 1
    bodies = {c[2].content for c in calls}
    assert len(bodies) == 1
    body = bodies.pop()
    assert all(c[2].headers["X-CRM-Signature"] == sign("secret-flaky", body) for c in calls)
    assert json.loads(body)["event_id"] == env.event_id
    page = await hooks.deliveries("A", sub["id"])
    assert page["items"][0]["attempts"] == 3
    assert [e["status"] for e in page["items"][0]["log"]] == [503, 503, 204]


async def test_delivery_is_failed_when_retries_run_past_max_age(db: Any) -> None:
    endpoints = Endpoints()
    hooks = make(db, endpoints, max_age_s=0.3)
    sub = await hooks.create("A", "u", "http://broken/x", ["*"], "secret-broken", None)
    await hooks.on_event(envelope("A"))
    hooks.start()
    try:

        async def failed() -> bool:
            doc = await db.deliveries.find_one({"subscription_id": sub["id"]})
            return bool(doc and doc["state"] == "failed")

        await wait_for(failed, timeout=5)
    finally:
        await hooks.stop()
    n = len(endpoints.to("broken"))
    assert n >= 2
    await asyncio.sleep(0.3)
    assert len(endpoints.to("broken")) == n  # no attempt after failing


async def test_rule_webhook_action_is_delivered_once_to_the_rule_url_and_not_to_subscriptions(
    db: Any,
) -> None:
    endpoints = Endpoints()
    hooks = make(db, endpoints)
    everything = await hooks.create("A", "u", "http://ok/all", ["*"], "secret-all", None)
    trigger = envelope("A", "deal.won")
    command = Envelope(
        event_id=new_id(),
        event_type="rule.webhook_requested",
        occurred_at=datetime.now(UTC),
        tenant_id="A",
        producer="tasks",
        correlation_id="c",
        payload={
            "caused_by_rule": "r1",
            "rule_chain": ["r1"],
            "action_key": "rule:r1:k:0",
            "url": "http://ok/rule",
            "event": {"event_id": trigger.event_id, "event_type": "deal.won", "payload": {"deal_id": "d1"}},
        },
    )
    await hooks.on_event(command)
    await hooks.on_event(command)
    hooks.start()
    try:

        async def delivered() -> bool:
            return bool(await db.deliveries.count_documents({"state": "delivered"}) == 1)

        await wait_for(delivered, timeout=5)
    finally:
        await hooks.stop()
    assert [c[2].url.path for c in endpoints.calls] == ["/rule"]
    request = endpoints.calls[0][2]
    body = json.loads(request.content)
    assert body["rule_id"] == "r1" and body["payload"] == {"deal_id": "d1"}
    assert body["event_id"] == trigger.event_id and request.headers["X-CRM-Event-Type"] == "deal.won"
    assert "X-CRM-Signature" not in request.headers
    assert (await hooks.deliveries("A", everything["id"]))["items"] == []


async def test_a_rule_webhook_is_signed_with_the_rules_sealed_secret(db: Any) -> None:
    endpoints = Endpoints()
    hooks = make(db, endpoints)
    trigger = envelope("A", "deal.won")
    command = Envelope(
        event_id=new_id() + "cmd",
        event_type="rule.webhook_requested",
        occurred_at=datetime.now(UTC),
        tenant_id="A",
        producer="tasks",
        correlation_id="c",
        payload={
            "caused_by_rule": "r2",
            "action_key": "rule:r2:k:0",
            "url": "http://ok/signed",
            "secret": "sealed:" + hooks.secrets.seal({"secret": "rule-secret"}),
            "event": {"event_id": trigger.event_id, "event_type": "deal.won", "payload": {"deal_id": "d1"}},
        },
    )
    await hooks.on_event(command)
    [doc] = await db.deliveries.find({}).to_list(10)
    assert await hooks.attempt(doc) == "delivered"
    request = endpoints.calls[0][2]
    assert request.headers["X-CRM-Signature"] == sign("rule-secret", request.content)
    Webhook(b"rule-secret").verify(request.content, dict(request.headers))


async def test_deliveries_carry_standard_webhooks_headers_the_standard_library_verifies(db: Any) -> None:
    endpoints = Endpoints()
    hooks = make(db, endpoints)
    await hooks.create("A", "u", "http://ok/std", ["*"], "plain-secret-1", None)
    await hooks.create("A", "u", "http://ok/whsec", ["*"], "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", None)
    await hooks.on_event(envelope("A"))
    for doc in await db.deliveries.find({}).to_list(10):
        assert await hooks.attempt(doc) == "delivered"
    by_path = {c[2].url.path: c[2] for c in endpoints.calls}
    plain, whsec = by_path["/std"], by_path["/whsec"]
    assert plain.headers["webhook-signature"].startswith("v1,")
    assert plain.headers["webhook-id"] == plain.headers["X-CRM-Delivery-Id"]
    assert (
        Webhook(b"plain-secret-1").verify(plain.content, dict(plain.headers))["event_type"]
        == "contact.updated"
    )
    Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").verify(whsec.content, dict(whsec.headers))
    with pytest.raises(WebhookVerificationError):  # another body under the same headers
        Webhook(b"plain-secret-1").verify(plain.content + b" ", dict(plain.headers))


async def test_backlog_gauges_count_pending_deliveries(db: Any) -> None:
    from gateway.metrics import Metrics

    hooks = make(db, Endpoints())
    await hooks.create("A", "u", "http://ok/x", ["*"], "secret-gauge", None)
    for _ in range(3):
        await hooks.on_event(envelope("A"))
    metrics = Metrics()
    await asyncio.sleep(0.05)
    await hooks.observe_backlog(metrics)
    text = metrics.render().decode()
    assert "crm_webhook_pending 3.0" in text
    lag = next(
        float(line.split()[1]) for line in text.splitlines() if line.startswith("crm_webhook_oldest_due")
    )
    assert 0.0 < lag < 5.0
