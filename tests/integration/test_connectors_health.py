"""A channel's health counts are kept in memory and written in batches: a read that races a
batch write still shows every count exactly once. Real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.connectors.main import ConnectorsService
from tests.support.services import connectors_service

pytestmark = pytest.mark.integration

CTX = {"tenant_id": "ten-health", "user_id": "u1", "role": "admin", "settings": {}}


@pytest.fixture
async def svc(mongo_url: str, namespace: str) -> AsyncIterator[ConnectorsService]:
    async with connectors_service(mongo_url, namespace) as service:
        yield service


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
