"""The foundation's guarantees, against the real broker and the real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

import aio_pika
import pytest

from crm.hub import Hub
from shared.bus import Bus, EventPublisher, Topology
from shared.clock import SystemClock
from shared.events import Envelope, make_event
from shared.mongo import Store, UnitOfWork, mongo_client
from shared.service import Service
from shared.settings import Settings

pytestmark = pytest.mark.integration


def env(tenant: str = "t1", **payload: Any) -> Envelope:
    return make_event("thing.happened", tenant_id=tenant, producer="test", payload=payload or {"n": 1})


async def test_same_event_consumed_twice_has_one_effect(mongo_url: str) -> None:
    client = mongo_client(mongo_url)
    store = Store(client, f"plumb_{uuid.uuid4().hex[:8]}", producer="test")
    await store.ensure_indexes({})
    e = env()

    async def effect(uow: UnitOfWork) -> str:
        await uow.db.effects.insert_one({"event": e.event_id}, session=uow.session)
        return "done"

    assert await store.consume(e, "c1", effect) == "done"
    assert await store.consume(e, "c1", effect) is None
    assert await store.db.effects.count_documents({}) == 1
    assert await store.consume(e, "another-consumer", effect) == "done"
    await client.close()


async def test_failed_effect_leaves_no_marker_and_no_event(mongo_url: str) -> None:
    client = mongo_client(mongo_url)
    published: list[Envelope] = []

    async def publish(e: Envelope) -> None:
        published.append(e)

    store = Store(client, f"plumb_{uuid.uuid4().hex[:8]}", producer="test", publish=publish)
    await store.ensure_indexes({})
    e = env()

    async def broken(uow: UnitOfWork) -> None:
        await uow.db.effects.insert_one({"x": 1}, session=uow.session)
        uow.emit("thing.followed", "t1", {"n": 2})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.consume(e, "c1", broken)
    assert await store.db.effects.count_documents({}) == 0
    assert await store.db.processed.count_documents({}) == 0
    assert await store.db.outbox.count_documents({}) == 0
    assert published == []
    await client.close()


async def test_event_survives_a_failed_publish_and_the_sweeper_sends_it(mongo_url: str) -> None:
    client = mongo_client(mongo_url)
    published: list[Envelope] = []
    broker_up = False

    async def publish(e: Envelope) -> None:
        if not broker_up:
            raise ConnectionError("broker down")
        published.append(e)

    store = Store(client, f"plumb_{uuid.uuid4().hex[:8]}", producer="test", publish=publish)
    await store.ensure_indexes({})

    async def unit(uow: UnitOfWork) -> None:
        await uow.db.things.insert_one({"_id": "a"}, session=uow.session)
        uow.emit("thing.created", "t1", {"id": "a"})

    await store.atomic(unit)
    assert await store.db.things.count_documents({}) == 1
    assert await store.db.outbox.count_documents({}) == 1
    broker_up = True
    assert await store.sweep_outbox(older_than_s=0) == 1
    assert [p.event_type for p in published] == ["thing.created"]
    assert await store.db.outbox.count_documents({}) == 0
    await client.close()


class Flaky(Service):
    """A consumer that always fails on ``poison`` and counts what it handles."""

    name = "flaky"

    def setup(self) -> None:
        self.attempts = 0
        self.on("thing.happened", self.handle)

    async def handle(self, e: Envelope) -> None:
        if e.payload.get("poison"):
            self.attempts += 1
            raise ValueError("cannot handle this one")

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.seen.insert_one({"event": e.event_id}, session=uow.session)

        await self.store.consume(e, "flaky.handle", unit)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_poison_message_is_dead_lettered_and_duplicates_have_one_effect(
    mongo_url: str, rabbit: str, namespace: str, tmp_path: Any, queue_type: str
) -> None:
    settings = Settings(
        rabbit_url=rabbit,
        mongo_url=mongo_url,
        namespace=namespace,
        retry_limit=2,
        data_dir=tmp_path,
        queue_type=queue_type,
    )
    hub = Hub(settings, [], mongo_url=mongo_url, clock=SystemClock())
    svc = Flaky(hub.runtime)
    hub.add(svc)
    await hub.start()
    try:
        pub = EventPublisher(hub.runtime.bus)
        good = env(n=1)
        await pub.publish(good)
        await pub.publish(good)  # at-least-once: the same event again
        await pub.publish(env(poison=True))

        conn = await aio_pika.connect(rabbit)
        async with conn:
            ch = await conn.channel()
            dlq = await ch.get_queue(f"{namespace}.dead-letters", ensure=False)
            dead = None
            for _ in range(100):
                dead = await dlq.get(no_ack=True, fail=False)
                if dead:
                    break
                await asyncio.sleep(0.1)
            assert dead is not None, "poison message never reached the dead-letter queue"
            assert Envelope.model_validate_json(dead.body).payload == {"poison": True}
        assert svc.attempts == 3  # first delivery + 2 redeliveries, then dead-lettered
        assert await svc.db.seen.count_documents({"event": good.event_id}) == 1
    finally:
        await hub.stop()


async def test_events_waiting_in_a_queue_of_the_old_layout_are_moved_and_handled(
    mongo_url: str, rabbit: str, namespace: str, tmp_path: Any
) -> None:
    """An installation upgraded from one queue per consumer and routing key: what waits in the old
    queue is moved into the service's one queue on start, handled once, and the old queue goes."""
    old = f"{namespace}.flaky.thing.happened.v1"
    waiting = [env(n=i) for i in range(3)]
    conn = await aio_pika.connect(rabbit)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.declare_queue(old, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})
        for e in waiting:
            await ch.default_exchange.publish(
                aio_pika.Message(e.model_dump_json().encode(), delivery_mode=2), routing_key=old
            )
    settings = Settings(rabbit_url=rabbit, mongo_url=mongo_url, namespace=namespace, data_dir=tmp_path)
    hub = Hub(settings, [], mongo_url=mongo_url, clock=SystemClock())
    svc = Flaky(hub.runtime)
    hub.add(svc)
    await hub.start()
    try:
        for _ in range(100):
            if await svc.db.seen.count_documents({}) == 3:
                break
            await asyncio.sleep(0.1)
        seen = sorted(d["event"] for d in await svc.db.seen.find({}).to_list(10))
        assert seen == sorted(e.event_id for e in waiting)
        assert not await hub.runtime.bus.queue_exists(old)
        assert await hub.runtime.bus.queue_exists(f"{namespace}.flaky")
    finally:
        await hub.stop()


async def test_broker_drop_removes_every_queue_and_exchange_of_a_namespace(
    mongo_url: str, rabbit: str, namespace: str, tmp_path: Any
) -> None:
    settings = Settings(rabbit_url=rabbit, mongo_url=mongo_url, namespace=namespace, data_dir=tmp_path)
    hub = Hub(settings, ["contacts", "deals"], mongo_url=mongo_url, clock=SystemClock())
    await hub.start()
    await hub.stop()
    probe = Bus(rabbit, Topology(namespace))
    await probe.connect()
    try:
        assert await probe.queue_exists(f"{namespace}.contacts")
        assert await probe.queue_exists(f"{namespace}.rpc.deals")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "crm.cli",
            "broker",
            "drop",
            namespace,
            env={**os.environ, "CRM_RABBIT_URL": rabbit},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out
        for name in ("contacts", "deals", "dead-letters", "rpc.contacts", "rpc.deals"):
            assert not await probe.queue_exists(f"{namespace}.{name}"), name
    finally:
        await probe.close()


async def test_events_waiting_together_share_one_transaction_and_a_poison_one_is_split_out(
    mongo_url: str, rabbit: str, namespace: str, tmp_path: Any
) -> None:
    settings = Settings(
        rabbit_url=rabbit, mongo_url=mongo_url, namespace=namespace, retry_limit=1, data_dir=tmp_path
    )
    first = Hub(settings, [], mongo_url=mongo_url, clock=SystemClock())
    first.add(Flaky(first.runtime))
    await first.start()  # declares the service's queue
    await first.stop()
    bus = Bus(rabbit, Topology(namespace))
    await bus.connect()
    good = [env(n=i) for i in range(30)]
    try:
        for e in [*good[:15], env(poison=True), *good[15:], good[3]]:  # and one repeat
            await bus.publish(e)
    finally:
        await bus.close()
    hub = Hub(settings, [], mongo_url=mongo_url, clock=SystemClock())
    svc = Flaky(hub.runtime)
    hub.add(svc)
    await hub.start()
    try:
        for _ in range(100):
            if await svc.db.seen.count_documents({}) == 30 and svc.attempts == 2:
                break
            await asyncio.sleep(0.1)
        seen = [d["event"] for d in await svc.db.seen.find({}).to_list(100)]
        assert sorted(seen) == sorted(e.event_id for e in good)  # each once
        assert svc.attempts == 2  # the poison one: in its batch, then alone once (retry_limit=1)
        assert hub.consumers["flaky"].batches >= 1
    finally:
        await hub.stop()
