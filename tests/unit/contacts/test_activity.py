"""Deal and task events as timeline items."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.contacts.domain.activity import activity_item
from services.contacts.domain.cards import name_key

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_deal_lost_names_the_reason_and_keeps_the_deal_ids() -> None:
    item = activity_item(
        "deal.lost",
        {
            "deal_id": "d1",
            "contact_id": "c1",
            "lost_reason": "Дорого",
            "occurred_at": "2026-11-01T10:00:00+00:00",
        },
        NOW,
    )
    assert item is not None
    assert item["kind"] == "deal" and item["summary"] == "Deal lost: Дорого"
    assert item["data"] == {"deal_id": "d1", "lost_reason": "Дорого", "event": "lost"}
    assert item["occurred_at"] == datetime(2026, 11, 1, 10, tzinfo=UTC)


def test_task_created_uses_the_title_and_the_event_time_when_the_payload_has_none() -> None:
    item = activity_item("task.created", {"task_id": "t1", "contact_id": "c1", "title": "Call back"}, NOW)
    assert item is not None
    assert (item["kind"], item["summary"], item["occurred_at"]) == ("task", "Task created: Call back", NOW)


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("task.created", {"task_id": "t1", "contact_id": None}),
        ("deal.updated", {"deal_id": "d", "contact_id": "c"}),
        ("task.reminder_due", {"task_id": "t", "contact_id": "c"}),
    ],
)
def test_events_without_a_contact_or_not_shown_give_nothing(event_type: str, payload: dict) -> None:
    assert activity_item(event_type, payload, NOW) is None


def test_name_key_ignores_case_order_spacing_and_yo() -> None:
    assert name_key("Пётр  Иванов") == name_key("иванов петр") == "иванов петр"
    assert name_key("") is None and name_key(None) is None
