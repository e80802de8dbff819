"""MailIngest against real MongoDB: the poller supervisor and the ``mail.received`` consumer.

The connectors service is replaced by a small stand-in with the members MailIngest uses; IMAP
connections are refused by a fake client factory (the real server is in the e2e tests).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.connectors.adapters.base import Captured, ChannelView
from services.connectors.mail.ingest import BrokerMailSink, MailIngest
from services.connectors.mail.poller import ImapConfig
from shared.clock import SystemClock
from shared.events import Envelope, make_event
from shared.mongo import Store, UnitOfWork, mongo_client
from shared.settings import Settings

pytestmark = pytest.mark.integration


class Publisher:
    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    async def publish(self, env: Envelope, *, mandatory: bool = False) -> None:
        self.sent.append(env)


class Runtime:
    def __init__(self) -> None:
        self.publisher = Publisher()


class StandIn:
    """The parts of ConnectorsService that MailIngest touches."""

    name = "connectors"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db: Any = store.db
        self.clock = SystemClock()
        self.settings = Settings(allow_private_urls=True)  # the stand-in mailbox is on 127.0.0.1
        self.rt = Runtime()
        self.emitted: list[tuple[str, list[Captured]]] = []
        self.subscribed: list[str] = []

    def on(self, event_type: str, handler: Any, *, consumer: str | None = None) -> None:
        self.subscribed.append(f"{consumer}:{event_type}")

    async def channel(self, channel_id: str, *, fresh: bool = False) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await self.db.channels.find_one({"_id": channel_id})
        return doc

    def channel_view(self, doc: dict[str, Any]) -> ChannelView:
        return ChannelView(
            id=doc["_id"],
            tenant_id=doc["tenant_id"],
            kind=doc["kind"],
            config=doc.get("config", {}),
            secrets=doc.get("plain_secrets", {}),
        )

    async def _emit(self, env: Envelope, doc: dict[str, Any], items: list[Captured]) -> None:
        async def unit(uow: UnitOfWork) -> None:
            self.emitted.append((doc["_id"], items))

        await self.store.consume(env, "connectors.hooks", unit)


CONNECT_THREADS: list[str] = []


def refuse(config: ImapConfig) -> Any:
    CONNECT_THREADS.append(threading.current_thread().name)
    raise ConnectionRefusedError("no server in this test")


@pytest.fixture
async def svc(mongo_url: str) -> AsyncIterator[StandIn]:
    client = mongo_client(mongo_url)
    name = f"ingest_{uuid.uuid4().hex[:8]}"
    store = Store(client, name, producer="connectors")
    await store.ensure_indexes({})
    try:
        yield StandIn(store)
    finally:
        await client.drop_database(name)
        await client.close()


def channel(cid: str, **config: Any) -> dict[str, Any]:
    return {
        "_id": cid,
        "tenant_id": "t1",
        "kind": "imap",
        "name": "box",
        "config": {"host": "127.0.0.1", "port": 1, "ssl": "none", "username": "u", **config},
        "plain_secrets": {"password": "p"},
        "intake": "auto",
        "active": True,
        "health": {"received": 0, "rejected": 0},
    }


async def test_supervisor_follows_channels_and_reports_a_failing_mailbox(svc: StandIn) -> None:
    ingest = MailIngest(svc, client_factory=refuse)  # type: ignore[arg-type]
    ingest.setup()
    assert svc.subscribed == ["connectors.mail:mail.received"]
    await svc.db.channels.insert_many(
        [channel("a"), channel("broken", host=""), {**channel("form"), "kind": "form"}]
    )
    try:
        await ingest.reconcile()
        assert set(ingest._running) == {"a"}
        first = ingest._running["a"].poller

        async def failing() -> dict[str, Any]:
            await ingest.reconcile()
            doc = await svc.db.channels.find_one({"_id": "a"})
            return dict(doc["health"])

        for _ in range(50):
            health = await failing()
            if health.get("state") == "failing":
                break
            await asyncio.sleep(0.1)
        assert health["state"] == "failing"
        assert health["last_error"] == "network: ConnectionRefusedError"
        assert health["received"] == 0  # counters are left alone
        # Each mailbox blocks a thread of its own, not the loop's shared executor.
        assert CONNECT_THREADS and all(name.startswith("imap-a") for name in CONNECT_THREADS)
        broken = await svc.db.channels.find_one({"_id": "broken"})
        assert broken["health"]["state"] == "misconfigured"
        assert broken["health"]["last_error"] == "config: config.host is required"

        # A config change restarts the poller; deactivation stops it.
        await svc.db.channels.update_one({"_id": "a"}, {"$set": {"config.poll_interval_s": 5}})
        await ingest.reconcile()
        assert ingest._running["a"].poller is not first
        assert ingest._running["a"].poller.config.poll_interval_s == 5
        await svc.db.channels.update_one({"_id": "a"}, {"$set": {"active": False}})
        await ingest.reconcile()
        assert ingest._running == {}
        assert await svc.db.imap_leases.find_one({"_id": "a"}) is None
    finally:
        await ingest.stop()


def received(cid: str, raw: bytes, role: str = "inbox") -> Envelope:
    payload = {
        "channel_id": cid,
        "folder": "INBOX",
        "uid": 1,
        "role": role,
        "raw_b64": base64.b64encode(raw).decode(),
    }
    return make_event("mail.received", tenant_id="t1", producer="connectors", payload=payload)


MAIL = (
    b"From: Client <client@client.ru>\r\nTo: sales@corp.example\r\nSubject: Hello\r\n"
    b"Message-ID: <m1@client.ru>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0300\r\n\r\nBody\r\n"
)
AUTO = (
    b"From: Client <client@client.ru>\r\nTo: sales@corp.example\r\nSubject: Out of office\r\n"
    b"Auto-Submitted: auto-replied\r\nMessage-ID: <a1@client.ru>\r\n\r\nAway\r\n"
)


async def test_each_message_id_is_emitted_and_counted_once(svc: StandIn) -> None:
    await svc.db.channels.insert_one(channel("c", address="sales@corp.example"))
    await svc.db.tenants.insert_one({"_id": "t1", "settings": {"own_domains": ["corp.example"]}})
    ingest = MailIngest(svc)  # type: ignore[arg-type]

    first = received("c", MAIL)
    await ingest.on_mail_received(first)
    await ingest.on_mail_received(first)  # the broker redelivers the same event
    await ingest.on_mail_received(received("c", MAIL))  # handed over again after a resync
    await ingest.on_mail_received(received("c", AUTO))
    await ingest.on_mail_received(received("c", AUTO))

    assert len(svc.emitted) == 1
    (item,) = svc.emitted[0][1]
    assert item.idempotency_key == "imap:c:<m1@client.ru>"
    assert item.sender.emails == ("client@client.ru",)
    doc = await svc.db.channels.find_one({"_id": "c"})
    assert doc["health"]["received"] == 1
    assert doc["health"]["duplicates"] == 2
    assert doc["health"]["skipped_auto_reply"] == 1


async def test_sink_publishes_the_raw_message_for_the_consumer(svc: StandIn) -> None:
    ingest = MailIngest(svc)  # type: ignore[arg-type]
    await svc.db.channels.insert_one(channel("c"))
    sink = BrokerMailSink(svc, "t1")  # type: ignore[arg-type]
    await sink.deliver("c", "Sent", 7, MAIL, role="sent")
    (env,) = svc.rt.publisher.sent
    assert env.event_type == "mail.received"
    assert env.tenant_id == "t1"
    assert env.payload["uid"] == 7
    assert env.payload["role"] == "sent"
    assert base64.b64decode(env.payload["raw_b64"]) == MAIL
    await ingest.on_mail_received(env)
    (item,) = svc.emitted[0][1]
    assert item.direction == "out"
    assert item.occurred_at == datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
