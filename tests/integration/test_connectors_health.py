"""A channel's health counts are kept in memory and written in batches: a read that races a
batch write still shows every count exactly once. Real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.connectors.main import ConnectorsService
from shared.settings import Settings
from tests.support.services import RecordingPublisher, offline_runtime

pytestmark = pytest.mark.integration

CTX = {"tenant_id": "ten-health", "user_id": "u1", "role": "admin", "settings": {}}


@pytest.fixture
async def svc(mongo_url: str, namespace: str) -> AsyncIterator[ConnectorsService]:
    settings = Settings(namespace=namespace, mongo_url=mongo_url)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    service = ConnectorsService(offline_runtime(settings, client, RecordingPublisher()))
    await service.prepare()
    try:
        yield service
    finally:
        await service.store.stop()
        await client.drop_database(settings.db_name("connectors"))
        await client.close()


async def test_reads_racing_a_health_flush_see_every_count_once(svc: ConnectorsService) -> None:
    body = {"kind": "form", "name": "Site", "secrets": {"hmac_secret": "s"}}
    channel = await svc.create_channel(CTX, {"body": body})
    args = {"channel_id": channel["id"]}
    for n in range(1, 31):
        await svc._health(channel["id"], ok=n % 3 != 0, error="401 bad signature")
        _, one, listed = await asyncio.gather(
            svc.flush_health(), svc.get_channel(CTX, args), svc.list_channels(CTX, {})
        )
        expected = {"received": n - n // 3, "rejected": n // 3}
        assert {k: one["health"][k] for k in expected} == expected, n
        assert {k: listed["items"][0]["health"][k] for k in expected} == expected, n
    stored = await svc.db.channels.find_one({"_id": channel["id"]})
    assert stored is not None and stored["health"]["received"] == 20 and stored["health"]["rejected"] == 10
