"""The tasks service's RPC table follows its contract: each request of ``services/tasks/api.py`` is
answered, and a request that does not fit its model is a 422 naming the field before any handler
(or database) is reached. No server."""

from __future__ import annotations

from datetime import UTC, datetime

from services.tasks import api
from services.tasks.service import REQUESTS, TasksService
from shared.clock import FrozenClock
from tests.support.services import unit_runtime


def service() -> TasksService:
    return TasksService(unit_runtime(FrozenClock(datetime(2026, 12, 6, tzinfo=UTC))))


def test_every_request_of_the_contract_is_answered() -> None:
    requests = {c for c in vars(api).values() if isinstance(c, type) and issubclass(c, api.Request)}
    assert set(REQUESTS) == requests - {api.Request}
    assert set(service().rpc.methods) == {r.METHOD for r in REQUESTS}


async def test_a_task_without_a_due_time_is_a_422_naming_it() -> None:
    body = {"title": "Call back", "kind": "call"}
    reply = await service().rpc.dispatch(
        {"method": "create_task", "ctx": {"tenant_id": "t1", "role": "admin"}, "args": {"body": body}}
    )
    assert reply["ok"] is False
    assert reply["error"]["status"] == 422 and "body.due_at" in reply["error"]["errors"]
