"""The inbox's rules on an in-memory store: accepting a sender makes one card with all of that
sender's waiting items on it, a manager only sees and resolves what it may, and an item is
resolved once. No server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.contacts import api
from services.contacts.handlers.capture import on_captured
from services.contacts.handlers.inbox import accept_inbox_item, get_inbox_item, reject_inbox_item
from shared.errors import Conflict, NotFound
from shared.events import InteractionCaptured, SenderData, make_event
from tests.unit.contacts.fakes import FakeStore

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ADMIN: dict[str, Any] = {"tenant_id": "t1", "user_id": "u-admin", "role": "admin"}


async def waiting(store: FakeStore, key: str, *, owner: str | None = "u1", at: datetime = T0) -> str:
    ic = InteractionCaptured(
        channel_id="ch1",
        channel_kind="form",
        intake="inbox",
        channel_owner_id=owner,
        kind="form",
        direction="in",
        occurred_at=at,
        sender=SenderData(name="Анна", phones=["+79990000001"]),
        summary=f"Заявка {key}",
    )
    env = make_event(
        "interaction.captured", tenant_id="t1", producer="connectors", payload=ic, idempotency_key=key
    )
    await on_captured(store, env, ic)
    (item,) = [d for d in store.docs("inbox") if key in d["interaction"]["event_keys"]]
    return str(item["_id"])


async def test_accepting_makes_one_card_with_every_waiting_item_of_the_sender() -> None:
    store = FakeStore(T0)
    first = await waiting(store, "a")
    second = await waiting(store, "b", at=T0 + timedelta(minutes=5))
    accepted = await accept_inbox_item(store, ADMIN, api.AcceptInboxItem(item_id=first))
    (contact,) = store.docs("contacts")
    assert accepted.status == "accepted" and accepted.contact.id == contact["_id"]
    assert contact["owner_id"] == "u1" and contact["source"]["kind"] == "form"
    assert {d["status"] for d in store.docs("inbox")} == {"accepted", "linked"}
    assert store.data["inbox"][second]["contact_id"] == contact["_id"]
    assert len(store.docs("timeline")) == 2
    assert contact["last_activity_at"] == T0 + timedelta(minutes=5)
    (created,) = store.events("contact.created")
    assert created.payload["interaction_kind"] == "form"
    (deal_please,) = store.events("inbox.item_accepted")
    assert deal_please.payload["title"] == "Анна" and deal_please.payload["owner_id"] == "u1"
    assert [e.payload["is_new_contact"] for e in store.events("interaction.recorded")] == [True, False]


async def test_an_item_is_resolved_once() -> None:
    store = FakeStore(T0)
    item = await waiting(store, "a")
    await reject_inbox_item(store, ADMIN, api.RejectInboxItem(item_id=item))
    with pytest.raises(Conflict):
        await accept_inbox_item(store, ADMIN, api.AcceptInboxItem(item_id=item))
    assert store.docs("contacts") == [] and store.events("inbox.item_accepted") == []
    assert len(store.events("inbox.item_rejected")) == 1


async def test_a_manager_does_not_see_another_managers_channel_items() -> None:
    store = FakeStore(T0)
    item = await waiting(store, "a", owner="u2")
    manager = {"tenant_id": "t1", "user_id": "u1", "role": "manager"}
    with pytest.raises(NotFound):
        await get_inbox_item(store, manager, api.GetInboxItem(item_id=item))
    with pytest.raises(NotFound):
        await accept_inbox_item(store, manager, api.AcceptInboxItem(item_id=item))
    assert (await get_inbox_item(store, ADMIN, api.GetInboxItem(item_id=item))).status == "pending"
