"""Conversations on the real MongoDB-protocol server: inbound messages recorded once, the outbox
worker's claim, retries, give-up and crash rule, and delivery reports moving a message forward.
The provider is Telegram's documented answers through httpx.MockTransport (the real stand-in
server is in the e2e tests)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.connectors.conversations import service
from services.connectors.conversations.handlers import delivery, inbound, send
from services.connectors.sending import INTERRUPTED, MAX_ATTEMPTS, SendWorker
from shared.clock import FrozenClock
from shared.events import Envelope, make_event
from shared.mongo import Store, mongo_client
from shared.settings import Settings

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TENANT = "t1"
CTX = {"tenant_id": TENANT, "user_id": "u1", "role": "admin", "settings": {}}


@dataclass
class Telegram:
    """Answers ``sendMessage`` from a script of statuses (200 = accepted)."""

    script: list[int] = field(default_factory=list)
    calls: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            return httpx.Response(
                200, json={"ok": True, "result": {"message_id": 500 + self.calls, "date": 1}}
            )
        if status == 429:
            body = {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests",
                "parameters": {"retry_after": 30},
            }
            return httpx.Response(429, json=body)
        return httpx.Response(
            status, json={"ok": False, "error_code": status, "description": "Internal Server Error"}
        )


class Host:
    """What conversations need from the connectors service, on a real store."""

    def __init__(self, store: Store, clock: FrozenClock, telegram: Telegram) -> None:
        self.store = store
        self.clock = clock
        self.settings = Settings(send_backoff_s=2.0, send_lease_s=60.0)
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(telegram.handle))
        self.sending = SendWorker(self)
        self.channel_doc = {
            "_id": "ch1",
            "tenant_id": TENANT,
            "kind": "telegram",
            "config": {"api_base_url": "https://tg.example"},
            "active": True,
        }

    @property
    def db(self) -> Any:
        return self.store.db

    async def channel(self, channel_id: str, *, fresh: bool = False) -> dict[str, Any] | None:
        return self.channel_doc if channel_id == "ch1" else None

    def channel_view(self, doc: dict[str, Any]) -> Any:
        from services.connectors.adapters.base import ChannelView

        return ChannelView(doc["_id"], doc["tenant_id"], doc["kind"], doc["config"], {"bot_token": "1:AA"})


@pytest.fixture
async def store(mongo_url: str) -> AsyncIterator[Store]:
    client: AsyncMongoClient[dict[str, Any]] = mongo_client(mongo_url)
    st = Store(client, f"it_conv_{uuid.uuid4().hex[:8]}", producer="connectors", clock=FrozenClock(T0))
    await st.ensure_indexes(service.INDEXES)
    try:
        yield st
    finally:
        await client.drop_database(st.db.name)
        await client.close()


@pytest.fixture
def telegram() -> Telegram:
    return Telegram()


@pytest.fixture
def host(store: Store, telegram: Telegram) -> Host:
    assert isinstance(store.clock, FrozenClock)
    return Host(store, store.clock, telegram)


def recorded(direction: str, provider_id: str, key: str | None = None, at: datetime = T0) -> Envelope:
    return make_event(
        "interaction.recorded",
        tenant_id=TENANT,
        producer="contacts",
        idempotency_key=key or f"recorded:{uuid.uuid4().hex}",
        payload={
            "interaction_id": uuid.uuid4().hex,
            "contact_id": "k1",
            "owner_id": "u1",
            "channel_id": "ch1",
            "channel_kind": "telegram",
            "kind": "message",
            "direction": direction,
            "occurred_at": at.isoformat(),
            "data": {
                "text": "Здравствуйте",
                "thread": {"key": "chat:5", "address": {"chat_id": 5}},
                "provider_message_id": provider_id,
            },
        },
    )


async def opened(host: Host) -> dict[str, Any]:
    env = recorded("in", "17", key="recorded:telegram:1")
    await inbound.on_recorded(host, env)
    await inbound.on_recorded(host, env)  # redelivered
    convs = await host.db.conversations.find({}).to_list(None)
    assert len(convs) == 1
    return convs[0]


async def answer(host: Host, conv: dict[str, Any], text: str = "Ответ") -> dict[str, Any]:
    return await send.send_message(host, CTX, {"conversation_id": conv["_id"], "text": text})


async def test_inbound_recorded_twice_is_one_message_and_our_echo_is_not_a_second(host: Host) -> None:
    conv = await opened(host)
    assert conv["unread"] == 1 and conv["assignee_id"] == "u1" and conv["awaiting_reply_since"] is not None
    msg = await answer(host, conv)
    host.clock.advance(60)
    assert await host.sending.send_one()
    stored = await host.db.messages.find_one({"_id": msg["id"]})
    assert stored["status"] == "sent" and stored["provider_message_id"] == "501"
    conv = await host.db.conversations.find_one({"_id": conv["_id"]})
    assert conv["unread"] == 0 and conv["awaiting_reply_since"] is None
    # our answer's timeline item comes back as interaction.recorded: not a new message
    await inbound.on_recorded(host, recorded("out", "501", at=T0 + timedelta(seconds=60)))
    assert await host.db.messages.count_documents({}) == 2
    # one sent from Telegram's own app is added, as sent
    await inbound.on_recorded(host, recorded("out", "777", at=T0 + timedelta(seconds=90)))
    assert await host.db.messages.count_documents({"direction": "out", "status": "sent"}) == 2
    assert not await host.sending.send_one()  # nothing left to send


async def test_idempotency_key_is_one_message_and_one_send(host: Host, telegram: Telegram) -> None:
    conv = await opened(host)
    args = {"conversation_id": conv["_id"], "text": "Ответ", "idempotency_key": "abc"}
    first = await send.send_message(host, CTX, args)
    again = await send.send_message(host, CTX, args)
    assert first["id"] == again["id"]
    while await host.sending.send_one():
        pass
    assert telegram.calls == 1 and await host.db.sends.count_documents({}) == 1


async def test_rate_limit_waits_retry_after_then_sends_once(host: Host, telegram: Telegram) -> None:
    conv = await opened(host)
    telegram.script = [429]
    msg = await answer(host, conv)
    other = await answer(host, conv, "Второй")
    assert await host.sending.send_one()
    job = await host.db.sends.find_one({"_id": msg["id"]})
    assert job["state"] == "queued" and job["next_at"].replace(tzinfo=UTC) == T0 + timedelta(seconds=30)
    held = await host.db.sends.find_one({"_id": other["id"]})
    assert held["next_at"].replace(tzinfo=UTC) == T0 + timedelta(seconds=30)  # the channel waits too
    assert not await host.sending.send_one()  # nothing due before Retry-After
    host.clock.advance(30)
    assert await host.sending.send_one() and await host.sending.send_one()
    assert telegram.calls == 3
    statuses = {
        d["_id"]: d["status"] for d in await host.db.messages.find({"direction": "out"}).to_list(None)
    }
    assert statuses == {msg["id"]: "sent", other["id"]: "sent"}


async def test_bounded_retries_then_failed_with_the_reason(host: Host, telegram: Telegram) -> None:
    conv = await opened(host)
    telegram.script = [500] * MAX_ATTEMPTS
    msg = await answer(host, conv)
    for _ in range(MAX_ATTEMPTS):
        host.clock.advance(3600)
        assert await host.sending.send_one()
    stored = await host.db.messages.find_one({"_id": msg["id"]})
    assert stored["status"] == "failed" and stored["error"] == "Telegram 500: Internal Server Error"
    assert telegram.calls == MAX_ATTEMPTS
    host.clock.advance(3600)
    assert not await host.sending.send_one()


async def test_an_attempt_cut_off_by_a_crash_is_not_repeated(host: Host, telegram: Telegram) -> None:
    conv = await opened(host)
    msg = await answer(host, conv)
    # a worker claimed it (the attempt is recorded) and died before recording the result
    claimed = await host.sending._claim()
    assert claimed is not None and claimed[1] is False
    assert not await host.sending.send_one()  # held by the lease
    host.clock.advance(61)
    assert await host.sending.send_one()
    stored = await host.db.messages.find_one({"_id": msg["id"]})
    assert stored["status"] == "failed" and stored["error"] == INTERRUPTED
    assert telegram.calls == 0


def report(status: str, provider_id: str = "501", seconds: float = 0) -> Envelope:
    return make_event(
        "delivery.status_reported",
        tenant_id=TENANT,
        producer="connectors",
        idempotency_key=f"status:{provider_id}:{status}",
        payload={
            "channel_id": "ch1",
            "idempotency_key": f"{provider_id}:{status}",
            "provider_message_id": provider_id,
            "status": status,
            "occurred_at": (T0 + timedelta(seconds=seconds)).isoformat(),
        },
    )


async def test_delivery_reports_move_the_message_forward_once(host: Host) -> None:
    conv = await opened(host)
    msg = await answer(host, conv)
    with pytest.raises(delivery.StatusBeforeSend):  # the report beat the send's bookkeeping
        await delivery.on_status_reported(host, report("delivered", seconds=1))
    assert await host.sending.send_one()
    for status in ("delivered", "read", "delivered"):  # the late "delivered" changes nothing
        await delivery.on_status_reported(host, report(status, seconds=2))
    stored = await host.db.messages.find_one({"_id": msg["id"]})
    assert stored["status"] == "read"
    outbox = await host.db.outbox.find({}).to_list(None)
    changes = [
        e["payload"]["status"]
        for doc in outbox
        for e in doc["envelopes"]
        if e["event_type"] == "message.status_changed"
    ]
    assert changes == ["delivered", "read"]
    await delivery.on_status_reported(host, report("read", provider_id="999"))  # not ours: ignored


class Inbox:
    """A real SMTP server (aiosmtpd) that keeps what it accepts."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(bytes(envelope.original_content or envelope.content))
        return "250 2.0.0 Ok"


async def test_an_email_cut_off_by_a_crash_is_sent_again_as_the_same_message(host: Host) -> None:
    """SMTP has the send's own idempotency: the Message-ID is fixed by the job, so the repeat is
    the same message (the Sent copy and the customer's client see one)."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    from services.connectors.conversations.domain.threads import message_id_for
    from shared.localmongo import free_port
    from shared.netguard import GuardedTransport, UrlGuard

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        host.channel_doc = {
            "_id": "ch1",
            "tenant_id": TENANT,
            "kind": "imap",
            "active": True,
            "config": {
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_ssl": "none",
                "address": "sales@corp.example",
            },
        }
        host.http = httpx.AsyncClient(transport=GuardedTransport(UrlGuard(allow_private=True)))
        await host.db.conversations.insert_one(
            {
                "_id": "conv-mail",
                "tenant_id": TENANT,
                "contact_id": "k1",
                "channel_id": "ch1",
                "kind": "imap",
                "thread_key": "mail:<q1@client.example>",
                "address": {
                    "to": ["anna@client.example"],
                    "subject": "Вопрос",
                    "in_reply_to": "<q1@client.example>",
                },
                "assignee_id": "u1",
                "unread": 1,
                "last_message_at": T0,
                "awaiting_reply_since": T0,
            }
        )
        msg = await send.send_message(host, CTX, {"conversation_id": "conv-mail", "text": "Ответ"})
        assert msg["subject"] == "Re: Вопрос"
        assert await host.sending._claim() is not None  # claimed, then the worker died
        host.clock.advance(61)
        assert await host.sending.send_one()
        (raw,) = inbox.received
        got = message_from_bytes(raw)
        assert got["Message-ID"] == message_id_for(msg["id"], "sales@corp.example")
        stored = await host.db.messages.find_one({"_id": msg["id"]})
        assert stored["status"] == "sent" and stored["provider_message_id"] == got["Message-ID"]
    finally:
        controller.stop()
