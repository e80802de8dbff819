"""The deals service's RPC table follows its contract: each request of ``services/deals/api.py`` is
answered, and a request that does not fit its model is a 422 naming the field before any handler
(or database) is reached. No server."""

from __future__ import annotations

from datetime import UTC, datetime

from services.deals import api
from services.deals.service import REQUESTS, DealsService
from shared.clock import FrozenClock
from tests.support.services import unit_runtime


def service() -> DealsService:
    return DealsService(unit_runtime(FrozenClock(datetime(2026, 12, 6, tzinfo=UTC))))


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
