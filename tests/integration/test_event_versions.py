"""Evolving an event (docs: deploy/README.md "Evolving events"): a consumer of ``*.v1`` keeps
working when a newer producer adds fields, to the payload or to the envelope, and never sees the
``*.v2`` published beside it. Real broker, real database, the consumer the services use."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

from crm.hub import Hub
from shared.clock import SystemClock
from shared.events import ContactCreated, Envelope
from shared.service import Service
from shared.settings import Settings

pytestmark = pytest.mark.integration


class V1Consumer(Service):
    """Handles ``contact.created`` version 1 the way the services do (the registered model)."""

    name = "versioned"

    def setup(self) -> None:
        self.seen: list[tuple[Envelope, ContactCreated]] = []
        self.on("contact.created", self.handle)

    async def handle(self, env: Envelope) -> None:
        self.seen.append((env, env.parsed()))


def raw_event(version: int, payload: dict[str, Any], **envelope_extra: Any) -> bytes:
    event_id = uuid.uuid4().hex
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": "contact.created",
            "version": version,
            "occurred_at": datetime.now(UTC).isoformat(),
            "tenant_id": "t1",
            "producer": "contacts-next-release",
            "correlation_id": event_id,
            "payload": payload,
            **envelope_extra,
        }
    ).encode()


async def test_a_v1_consumer_ignores_unknown_fields_and_never_sees_v2(
    mongo_url: str, rabbit: str, namespace: str, tmp_path: Any
) -> None:
    settings = Settings(rabbit_url=rabbit, mongo_url=mongo_url, namespace=namespace, data_dir=tmp_path)
    hub = Hub(settings, [], mongo_url=mongo_url, clock=SystemClock())
    svc = V1Consumer(hub.runtime)
    hub.add(svc)
    await hub.start()
    try:
        conn = await aio_pika.connect(rabbit)
        async with conn:
            ch = await conn.channel()
            events = await ch.get_exchange(f"{namespace}.events")
            newer = raw_event(
                1,
                {"contact_id": "c1", "owner_id": None, "loyalty_tier": "gold", "scores": {"rfm": 5}},
                schema="https://crm.example/schemas/contact.created.v1.json",  # an envelope field
            )
            v2 = raw_event(2, {"contact": {"id": "c2"}})  # the breaking shape, as its own version
            await events.publish(
                aio_pika.Message(v2, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="contact.created.v2",
            )
            await events.publish(
                aio_pika.Message(newer, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="contact.created.v1",
            )
            for _ in range(100):
                if svc.seen:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the v2, were it routed here, would have arrived by now
            dlq = await ch.declare_queue(f"{namespace}.dead-letters", passive=True)
            dead = dlq.declaration_result.message_count
        assert len(svc.seen) == 1, "the v1 event was not handled (or v2 reached a v1 consumer)"
        env, payload = svc.seen[0]
        assert env.version == 1 and payload.contact_id == "c1"
        assert payload.model_extra == {"loyalty_tier": "gold", "scores": {"rfm": 5}}  # kept, not fatal
        assert dead == 0
    finally:
        await hub.stop()
