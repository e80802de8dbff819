"""The tasks service's pure helpers: rule trigger keys, event times, stored rule documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.tasks import service as m
from services.tasks.domain import Task
from services.tasks.rules import parse_rule
from shared.errors import AppError
from shared.events import make_event

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def recorded(interaction_id: str, **payload: object) -> object:
    return make_event(
        "interaction.recorded",
        tenant_id="t",
        producer="contacts",
        payload={
            "interaction_id": interaction_id,
            "contact_id": "c",
            "kind": "call",
            "direction": "in",
            "occurred_at": T0.isoformat(),
            **payload,
        },
    )


def test_two_records_of_one_interaction_share_the_trigger_key_other_events_do_not() -> None:
    a, b = recorded("i1"), recorded("i1", data={"status": "missed"})
    assert a.event_id != b.event_id  # type: ignore[attr-defined]
    assert m._dedupe_key(a) == m._dedupe_key(b) == "interaction:i1"  # type: ignore[arg-type]
    assert m._dedupe_key(recorded("i2")) != m._dedupe_key(a)  # type: ignore[arg-type]
    moved = make_event("deal.stage_changed", tenant_id="t", producer="deals", payload={"deal_id": "d"})
    again = make_event("deal.stage_changed", tenant_id="t", producer="deals", payload={"deal_id": "d"})
    assert m._dedupe_key(moved) == moved.event_id != m._dedupe_key(again)


def test_due_offsets_count_from_when_the_call_happened_not_from_processing() -> None:
    env = recorded("i1")
    assert m._event_time(env) == T0  # type: ignore[arg-type]
    later = make_event(
        "contact.created", tenant_id="t", producer="c", payload={"contact_id": "c"}, occurred_at=T0
    )
    assert m._event_time(later) == T0


def test_rule_document_round_trip_keeps_the_rule_and_scopes_the_id_by_tenant() -> None:
    rule = parse_rule(
        {
            "id": "r1",
            "name": "x",
            "event_type": "contact.created",
            "conditions": [{"field": "source.kind", "op": "eq", "value": "tilda"}],
            "actions": [{"type": "webhook", "url": "https://example.com/h"}],
        }
    )
    doc = m._rule_to_doc(rule, "ten")
    assert doc["_id"] == "ten:r1" and doc["tenant_id"] == "ten"
    assert m._rule_from_doc({**doc, "created_at": T0}) == rule


def test_stage_task_templates_are_validated_with_field_paths() -> None:
    ok, errors = m._parse_stage_tasks({"s1": [{"title": "Send proposal", "kind": "proposal"}]})
    assert errors == {}
    assert ok["s1"][0]["due_in_s"] == 86400 and ok["s1"][0]["assignee"] == "owner"
    _, errors = m._parse_stage_tasks({"s1": [{"title": ""}], "s2": "nope"})
    assert set(errors) == {"stage_tasks.s1.0.title", "stage_tasks.s2"}
    _, errors = m._parse_stage_tasks(["x"])
    assert "stage_tasks" in errors


def test_written_task_answers_with_what_a_read_returns() -> None:
    at = T0 + timedelta(microseconds=123456)
    task = Task(id="t1", tenant_id="t", title="x", kind="call", due_at=at, created_at=at, updated_at=at)
    stored = m._as_stored(task)
    assert stored.due_at.microsecond == 123000 and stored.created_at.microsecond == 123000


def test_cursor_and_filters_reject_naive_times() -> None:
    with pytest.raises(AppError) as err:
        m._parse_when("2026-11-27T10:00:00", "due_before")
    assert err.value.status == 422 and "due_before" in err.value.errors
    assert m._parse_when("2026-11-27T10:00:00Z", "x") == datetime(2026, 11, 27, 10, tzinfo=UTC)
