"""The deals service's RPC table follows its contract: each request of ``services/deals/api.py`` is
answered, and a request that does not fit its model is a 422 naming the field before any handler
(or database) is reached. No server."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient

from services.deals import api
from services.deals.service import REQUESTS, DealsService
from shared.bus import Bus, EventPublisher, Topology
from shared.clock import FrozenClock
from shared.crypto import SecretBox
from shared.service import Runtime
from shared.settings import Settings


def service() -> DealsService:
    bus = Bus("amqp://guest:guest@127.0.0.1:1/", Topology("unit"))  # never connected
    return DealsService(
        Runtime(
            settings=Settings(namespace="unit"),
            bus=bus,
            topology=Topology("unit"),
            mongo=AsyncMongoClient("mongodb://127.0.0.1:1", connect=False),
            publisher=EventPublisher(bus),
            clock=FrozenClock(datetime(2026, 12, 6, tzinfo=UTC)),
            secrets=SecretBox(Fernet.generate_key()),
        )
    )


def test_every_request_of_the_contract_is_answered() -> None:
    requests = {c for c in vars(api).values() if isinstance(c, type) and issubclass(c, api.Request)}
    assert set(REQUESTS) == requests - {api.Request}
    assert set(service().rpc.methods) == {r.METHOD for r in REQUESTS}


async def test_a_move_without_a_stage_is_a_422_naming_it() -> None:
    reply = await service().rpc.dispatch(
        {
            "method": "move_deal",
            "ctx": {"tenant_id": "t1", "role": "admin"},
            "args": {"deal_id": "d1", "body": {}},
        }
    )
    assert reply["ok"] is False
    assert reply["error"]["status"] == 422 and "body.stage_id" in reply["error"]["errors"]
