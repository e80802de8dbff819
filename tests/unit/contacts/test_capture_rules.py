"""The capture handler's rules on an in-memory store: who a touch belongs to, what the timeline
and the inbox show, and which events announce it. No server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.contacts.handlers.capture import on_captured
from shared.events import Envelope, InteractionCaptured, SenderData, make_event
from tests.unit.contacts.fakes import FakeStore, FakeTx

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def touch(
    key: str,
    *,
    phones: list[str] | None = None,
    emails: list[str] | None = None,
    intake: str = "auto",
    kind: str = "form",
    subject: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime = T0,
) -> tuple[Envelope, InteractionCaptured]:
    ic = InteractionCaptured(
        channel_id="ch1",
        channel_kind="form",
        intake=intake,  # type: ignore[arg-type]
        channel_owner_id="u1",
        kind=kind,  # type: ignore[arg-type]
        direction="in",
        occurred_at=at,
        sender=SenderData(name="Иван", phones=phones or [], emails=emails or []),
        summary=f"{kind} {key}",
        data=data or {},
        subject_key=subject,
    )
    env = make_event(
        "interaction.captured", tenant_id="t1", producer="connectors", payload=ic, idempotency_key=key
    )
    return env, ic


async def capture(store: FakeStore, key: str, **kw: Any) -> None:
    env, ic = touch(key, **kw)
    await on_captured(store, env, ic)


async def test_a_new_sender_on_an_auto_channel_becomes_a_contact_with_the_touch_on_its_timeline() -> None:
    store = FakeStore(T0)
    await capture(store, "lead-1", phones=["+79161234567"])
    (contact,) = store.docs("contacts")
    (item,) = store.docs("timeline")
    assert contact["owner_id"] == "u1" and contact["source"]["kind"] == "form"
    assert item["contact_id"] == contact["_id"] and item["event_keys"] == ["lead-1"]
    (created,) = store.events("contact.created")
    assert created.payload["contact_id"] == contact["_id"] and created.payload["interaction_kind"] == "form"
    (recorded,) = store.events("interaction.recorded")
    assert recorded.payload["is_new_contact"] is True
    assert store.data["identities"].keys() == {"t1:p:+79161234567"}


async def test_a_known_phone_goes_on_the_existing_card_which_learns_the_new_email() -> None:
    store = FakeStore(T0)
    await capture(store, "a", phones=["+79161234567"])
    await capture(store, "b", phones=["+79161234567"], emails=["ivan@example.ru"])
    (contact,) = store.docs("contacts")
    assert contact["emails"] == ["ivan@example.ru"] and "ivan@example.ru" in contact["search"]
    assert len(store.docs("timeline")) == 2
    assert len(store.events("contact.created")) == 1
    assert [e.payload["is_new_contact"] for e in store.events("interaction.recorded")] == [True, False]


async def test_the_same_event_twice_has_one_effect() -> None:
    store = FakeStore(T0)
    env, ic = touch("lead-1", phones=["+79161234567"])
    await on_captured(store, env, ic)
    await on_captured(store, env, ic)
    assert len(store.docs("contacts")) == 1 and len(store.docs("timeline")) == 1
    assert len(store.published) == 2  # contact.created, interaction.recorded


async def test_a_call_start_and_end_are_one_timeline_item_with_the_final_status() -> None:
    store = FakeStore(T0)
    await capture(
        store, "c1", phones=["+79161234567"], kind="call", subject="call-1", data={"status": "ringing"}
    )
    await capture(
        store,
        "c2",
        phones=["+79161234567"],
        kind="call",
        subject="call-1",
        data={"status": "answered", "duration_s": 42},
        at=T0 - timedelta(seconds=5),
    )
    (item,) = store.docs("timeline")
    assert item["data"] == {"status": "answered", "duration_s": 42}
    assert item["occurred_at"] == T0 - timedelta(seconds=5)
    assert item["event_keys"] == ["c1", "c2"]
    assert [e.payload["first_of_subject"] for e in store.events("interaction.recorded")] == [True, False]


async def test_a_sender_on_an_inbox_channel_waits_in_the_inbox_and_a_missed_call_asks_once_for_a_callback() -> (
    None
):
    store = FakeStore(T0)
    common: dict[str, Any] = {
        "phones": ["+79990000001"],
        "intake": "inbox",
        "kind": "call",
        "subject": "call-9",
    }
    await capture(store, "r", data={"status": "ringing"}, **common)
    await capture(store, "m", data={"status": "missed"}, **common)
    await capture(store, "m2", data={"status": "missed", "duration_s": 0}, **common)
    assert store.docs("contacts") == [] and store.docs("timeline") == []
    (item,) = store.docs("inbox")
    assert item["status"] == "pending" and item["interaction"]["event_keys"] == ["r", "m", "m2"]
    assert len(store.events("inbox.item_opened")) == 1
    (missed,) = store.events("inbox.call_missed")
    assert missed.payload["item_id"] == item["_id"] and missed.payload["data"] == {"status": "missed"}


async def test_a_touch_matching_two_cards_goes_to_the_latest_and_records_them_as_possible_duplicates() -> (
    None
):
    store = FakeStore(T0)
    await capture(store, "a", phones=["+79161234567"])
    await capture(store, "b", emails=["ivan@example.ru"], at=T0 + timedelta(minutes=1))
    store.clock_now = T0 + timedelta(hours=1)
    await capture(store, "c", phones=["+79161234567"], emails=["ivan@example.ru"], at=T0 + timedelta(hours=1))
    assert len(store.docs("contacts")) == 2
    (dup,) = store.docs("possible_duplicates")
    assert sorted(dup["ids"]) == sorted(c["_id"] for c in store.docs("contacts"))


async def test_a_lost_identity_race_is_run_again_and_finds_the_winner() -> None:
    """Another replica created the same person first: the claim fails, the unit runs again and
    the touch lands on the winner's card, with no second contact."""
    store = FakeStore(T0)
    await capture(store, "first", phones=["+79161234567"])
    (winner,) = store.docs("contacts")
    calls = 0
    real = FakeTx.find_candidates

    async def blind_once(self: FakeTx, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        return [] if calls == 1 else await real(self, *args, **kw)  # the first run misses the winner

    FakeTx.find_candidates = blind_once  # type: ignore[method-assign]
    try:
        await capture(store, "second", phones=["+79161234567"])
    finally:
        FakeTx.find_candidates = real  # type: ignore[method-assign]
    assert calls == 2
    assert [c["_id"] for c in store.docs("contacts")] == [winner["_id"]]
    assert len(store.docs("timeline")) == 2


async def test_an_answer_from_a_cards_conversation_goes_on_that_card_whoever_the_thread_names() -> None:
    store = FakeStore(T0)
    await capture(store, "a", phones=["+79161234567"])
    (card,) = store.docs("contacts")
    env, ic = touch("answer-1", phones=["+79990000009"], kind="message")
    ic = ic.model_copy(update={"contact_id": card["_id"], "direction": "out"})
    await on_captured(store, env, ic)
    assert len(store.docs("contacts")) == 1
    assert {i["contact_id"] for i in store.docs("timeline")} == {card["_id"]}
    assert store.docs("contacts")[0]["phones"] == ["+79161234567"]  # the thread's address is not learnt
