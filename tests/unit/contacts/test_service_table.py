"""The contacts service's tables, wired as the hub runs them: every request of the contract has a
handler, a request that does not fit its model is a 422 before any handler runs, and an event's
payload reaches its handler decoded. The store is the in-memory fake; no server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.contacts import api
from services.contacts.service import EVENTS, RPC, ContactsService
from services.contacts.store import ContactsStore
from shared.clock import FrozenClock
from shared.events import InteractionCaptured, SenderData, make_event
from tests.support.services import unit_runtime
from tests.unit.contacts.fakes import FakeStore

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class OnFakeStore(ContactsService):
    fake = FakeStore(T0)

    @property
    def contacts(self) -> ContactsStore:
        return self.fake


def service() -> OnFakeStore:
    rt = unit_runtime(FrozenClock(T0))
    svc = OnFakeStore(rt)
    svc.fake = FakeStore(T0)
    return svc


def captured() -> InteractionCaptured:
    return InteractionCaptured(
        channel_id="ch1",
        channel_kind="form",
        intake="auto",
        kind="form",
        direction="in",
        occurred_at=T0,
        sender=SenderData(emails=["a@example.ru"]),
        summary="Form",
    )


def test_every_request_of_the_contract_has_a_handler() -> None:
    requests = {cls for cls in vars(api).values() if isinstance(cls, type) and issubclass(cls, api.Request)}
    assert set(RPC) == requests - {api.Request}
    assert set(service().rpc.methods) == {r.METHOD for r in RPC}


def test_the_consumer_binds_every_event_of_the_table() -> None:
    keys = set(service().events.handlers)
    assert "interaction.captured.v1" in keys and "rule.assign_owner_requested.v1" in keys
    assert len(keys) == len(EVENTS)


async def test_a_request_that_does_not_fit_its_model_is_a_422_naming_the_field() -> None:
    reply = await service().rpc.dispatch(
        {"method": "merge_contacts", "ctx": {}, "args": {"contact_id": "c1"}}
    )
    assert reply["ok"] is False
    assert reply["error"]["status"] == 422 and "other_id" in reply["error"]["errors"]


async def test_a_captured_event_reaches_the_capture_handler_decoded() -> None:
    svc = service()
    payload = captured()
    env = make_event(
        "interaction.captured", tenant_id="t1", producer="connectors", payload=payload, idempotency_key="k"
    )
    await svc.events.handlers["interaction.captured.v1"](env)
    (contact,) = svc.fake.docs("contacts")
    assert contact["emails"] == ["a@example.ru"]


async def test_a_captured_event_with_a_broken_payload_fails_before_the_handler() -> None:
    """Validation fails (the consumer retries, then dead-letters it) and nothing is written."""
    svc = service()
    good = make_event(
        "interaction.captured", tenant_id="t1", producer="x", payload=captured(), idempotency_key="k"
    )
    broken = good.model_copy(update={"payload": {"kind": "form", "channel_id": "ch1"}})
    with pytest.raises(ValidationError, match="sender"):
        await svc.events.handlers["interaction.captured.v1"](broken)
    assert svc.fake.docs("contacts") == [] and svc.fake.published == []
