"""The card's pure rules: merging two cards, learning identities, filling from an import row, and
the one builder of a timeline item."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.contacts.domain.cards import (
    learn_sender,
    merge_cards,
    merge_import_row,
    new_contact,
    new_identities,
    owner_for,
)
from services.contacts.domain.timeline import TimelineItem, fold_event, is_missed_call

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def card(**kw: object) -> dict[str, object]:
    base = new_contact("t1", T0, name=None, phones=[], emails=[], owner_id=None, source=None)
    return {**base, **kw}


def test_a_merge_unites_identities_keeps_the_survivors_values_and_the_earlier_first_touch() -> None:
    survivor = card(name="Иван", phones=["+7916"], tags=["b"], custom={"a": 1}, created_at=T0)
    other = card(
        name="Ivan",
        phones=["+7916", "+7903"],
        emails=["i@x.ru"],
        tags=["a"],
        custom={"a": 2, "b": 3},
        source={"kind": "form"},
        created_at=T0 - timedelta(days=1),
        last_activity_at=T0 + timedelta(hours=1),
        merged_ids=["old"],
    )
    update = merge_cards(survivor, other)
    assert update["name"] == "Иван"
    assert update["phones"] == ["+7916", "+7903"] and update["emails"] == ["i@x.ru"]
    assert update["tags"] == ["a", "b"] and update["custom"] == {"a": 1, "b": 3}
    assert update["source"] == {"kind": "form"}
    assert update["last_activity_at"] == T0 + timedelta(hours=1)
    assert update["merged_ids"] == sorted([other["_id"], "old"])
    assert "i@x.ru" in update["search"]


def test_a_card_learns_only_identities_it_lacks() -> None:
    known = card(phones=["+7916"], handles=["telegram:1"])
    assert new_identities(known, ["+7916"], [], ["telegram:1"]) is None
    learnt = new_identities(known, ["+7916", "+7903"], ["a@b.ru"], [])
    assert learnt is not None
    assert learnt["phones"] == ["+7916", "+7903"] and learnt["emails"] == ["a@b.ru"]
    assert learn_sender(card(name=None), {"name": "Пётр", "phones": ["+7903"]})["name_key"] == "петр"


def test_an_import_row_fills_what_the_card_lacks_and_the_card_wins() -> None:
    target = card(name="Иван", owner_id=None, custom={"segment": "B2B"})
    update = merge_import_row(
        target,
        name="Другое имя",
        phones=["+7903"],
        emails=[],
        tags=["vip", ""],
        custom={"segment": "B2C", "inn": "1"},
        owner_id="u2",
        company_id=None,
    )
    assert update["name"] == "Иван" and update["owner_id"] == "u2" and update["tags"] == ["vip"]
    assert update["custom"] == {"segment": "B2B", "inn": "1"}


def test_a_manager_owns_what_it_creates_and_may_not_give_it_away() -> None:
    errors: dict[str, str] = {}
    assert owner_for({"role": "manager", "user_id": "u1"}, None, errors) == "u1" and not errors
    owner_for({"role": "manager", "user_id": "u1"}, "u2", errors)
    assert "owner_id" in errors
    assert owner_for({"role": "admin", "user_id": "u1"}, "u2", {}) == "u2"


def test_a_timeline_item_without_a_subject_is_its_own_and_carries_extra_fields() -> None:
    item = TimelineItem.new(
        tenant_id="t1", contact_id="c1", kind="note", direction="out", occurred_at=T0, now=T0, logged_by="u1"
    )
    doc = item.doc()
    assert doc["subject_key"] == f"manual:{item.id}" and doc["_id"] == item.id
    assert (
        doc["logged_by"] == "u1" and doc["event_keys"] == [] and doc["created_at"] == doc["updated_at"] == T0
    )


def test_a_late_event_of_a_call_folds_into_its_item() -> None:
    existing = {"occurred_at": T0, "data": {"status": "ringing"}, "summary": "Звонок"}
    fields = fold_event(
        existing, occurred_at=T0 - timedelta(seconds=3), data={"status": "missed"}, summary="Пропущен"
    )
    assert fields == {
        "occurred_at": T0 - timedelta(seconds=3),
        "data": {"status": "missed"},
        "summary": "Пропущен",
    }
    later = fold_event({**existing, **fields}, occurred_at=T0, data={"status": "ringing"}, summary="x")
    assert later["data"]["status"] == "missed" and later["summary"] == "Пропущен"
    assert is_missed_call({"kind": "call", "direction": "in", "data": later["data"]})
    assert not is_missed_call({"kind": "call", "direction": "out", "data": later["data"]})
