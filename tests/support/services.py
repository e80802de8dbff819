"""One service on the real MongoDB-protocol server, without a broker: what it publishes is kept."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cryptography.fernet import Fernet

from services.connectors.main import ConnectorsService
from services.deals.service import DealsService
from shared.bus import Bus, Topology
from shared.clock import Clock, SystemClock
from shared.crypto import SecretBox
from shared.events import Envelope
from shared.mongo import mongo_client
from shared.service import Runtime
from shared.settings import Settings


class RecordingPublisher:
    """Stands in for the broker publisher: keeps every envelope published, in order."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    async def publish(self, env: Envelope, *, mandatory: bool = False) -> None:
        self.sent.append(env)

    def of(self, event_type: str) -> list[Envelope]:
        return [e for e in self.sent if e.event_type == event_type]


def offline_runtime(
    settings: Settings, mongo: Any, publisher: RecordingPublisher, clock: Clock | None = None
) -> Runtime:
    """A runtime whose broker is never connected: events go to ``publisher``."""
    return Runtime(
        settings=settings,
        bus=Bus(settings.rabbit_url, Topology(settings.namespace)),
        topology=Topology(settings.namespace),
        mongo=mongo,
        publisher=publisher,  # type: ignore[arg-type]
        clock=clock or SystemClock(),
        secrets=SecretBox(Fernet.generate_key()),
    )


def unit_runtime(clock: Clock) -> Runtime:
    """Neither broker nor database behind it (both addresses refuse): for service tables whose
    requests must be refused before any I/O."""
    from pymongo import AsyncMongoClient

    settings = Settings(namespace="unit", rabbit_url="amqp://guest:guest@127.0.0.1:1/")
    return offline_runtime(
        settings, AsyncMongoClient("mongodb://127.0.0.1:1", connect=False), RecordingPublisher(), clock
    )


@asynccontextmanager
async def deals_service(mongo_url: str) -> AsyncIterator[DealsService]:
    """A DealsService on a fresh database of its own (dropped afterwards)."""
    client = mongo_client(mongo_url)
    settings = Settings(namespace=f"t{uuid.uuid4().hex[:10]}")
    svc = DealsService(offline_runtime(settings, client, RecordingPublisher()))
    await svc.prepare()
    try:
        yield svc
    finally:
        await client.drop_database(svc.db.name)
        await client.close()


@asynccontextmanager
async def connectors_service(
    mongo_url: str, namespace: str, clock: Clock | None = None, **settings: Any
) -> AsyncIterator[ConnectorsService]:
    """A ConnectorsService on its namespace's database (dropped afterwards); no broker."""
    config = Settings(namespace=namespace, mongo_url=mongo_url, **settings)
    client = mongo_client(mongo_url)
    svc = ConnectorsService(offline_runtime(config, client, RecordingPublisher(), clock))
    await svc.prepare()
    try:
        yield svc
    finally:
        await svc.store.stop()
        await client.drop_database(config.db_name("connectors"))
        await client.close()
