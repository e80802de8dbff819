"""Tasks domain: validation, status and overdue, reminder schedule, events, workload, reassign."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.tasks.domain import (
    Conflict,
    DomainError,
    NotFound,
    Task,
    ValidationFailed,
    bulk_reassign,
    bulk_reassign_filter,
    cancel_task,
    complete_task,
    create_task,
    mark_overdue_sent,
    mark_reminder_sent,
    matches_status,
    next_reminder_fields,
    overdue_claim_filter,
    reminder_claim_filter,
    reminder_is_due,
    status_filter,
    update_task,
    workload,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
MSK = timezone(timedelta(hours=3))


def make(
    task_id: str = "t1",
    *,
    due_at: datetime | str = "2026-03-10T15:00:00+03:00",
    now: datetime = NOW,
    **fields: object,
) -> Task:
    body: dict[str, object] = {"title": "Call the client", "kind": "call", "due_at": due_at}
    body.update(fields)
    task, _ = create_task(body, task_id=task_id, tenant_id="ten1", now=now)
    return task


# ---- errors ----------------------------------------------------------------------------------


def test_error_classes_carry_status_code_detail_and_errors() -> None:
    exc = ValidationFailed("bad", {"title": "required"})
    assert isinstance(exc, DomainError)
    assert (exc.status, exc.code, exc.detail, exc.errors) == (
        422,
        "validation_failed",
        "bad",
        {"title": "required"},
    )
    assert (NotFound("x").status, Conflict("x").status) == (404, 409)
    assert Conflict("x", code="task_not_open").code == "task_not_open"


# ---- validation ------------------------------------------------------------------------------


def test_create_rejects_invalid_fields_with_one_message_per_field() -> None:
    body = {
        "title": "   ",
        "kind": "visit",
        "due_at": "2026-03-10T10:00:00",  # no offset
        "remind_before_s": -5,
        "colour": "red",
    }
    with pytest.raises(ValidationFailed) as info:
        create_task(body, task_id="t", tenant_id="ten", now=NOW)
    assert info.value.status == 422
    assert set(info.value.errors) == {"title", "kind", "due_at", "remind_before_s", "colour"}
    assert "timezone" in info.value.errors["due_at"]


def test_create_requires_title_kind_and_due_at() -> None:
    with pytest.raises(ValidationFailed) as info:
        create_task({}, task_id="t", tenant_id="ten", now=NOW)
    assert set(info.value.errors) == {"title", "kind", "due_at"}


def test_create_rejects_a_non_object_body() -> None:
    with pytest.raises(ValidationFailed) as info:
        create_task(["title"], task_id="t", tenant_id="ten", now=NOW)  # type: ignore[arg-type]
    assert info.value.errors == {"body": "must be an object"}


@pytest.mark.parametrize("value", ["600", 1.5, True, 31 * 24 * 3600])
def test_create_rejects_a_remind_before_that_is_not_a_sane_integer(value: object) -> None:
    with pytest.raises(ValidationFailed) as info:
        make(remind_before_s=value)
    assert set(info.value.errors) == {"remind_before_s"}


def test_create_normalises_title_and_due_at_to_utc_and_keeps_cyrillic() -> None:
    task = make(title="  Перезвонить Ивану  ", due_at="2026-03-10T15:00:00+03:00")
    assert task.title == "Перезвонить Ивану"
    assert task.due_at == datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert task.status == "open"
    assert (task.created_at, task.updated_at, task.version) == (NOW, NOW, 1)


def test_create_emits_task_created_with_the_contract_payload() -> None:
    _task, events = create_task(
        {
            "title": "Send offer",
            "kind": "proposal",
            "due_at": "2026-03-11T10:00:00Z",
            "assignee_id": "u1",
            "contact_id": "c1",
            "deal_id": "d1",
        },
        task_id="t9",
        tenant_id="ten1",
        now=NOW,
    )
    assert [e["event_type"] for e in events] == ["task.created"]
    payload = events[0]["payload"]
    assert {k: payload[k] for k in ("task_id", "assignee_id", "contact_id", "deal_id")} == {
        "task_id": "t9",
        "assignee_id": "u1",
        "contact_id": "c1",
        "deal_id": "d1",
    }
    assert payload["due_at"] == "2026-03-11T10:00:00+00:00"
    assert (payload["kind"], payload["title"]) == ("proposal", "Send offer")
    assert "caused_by_rule" not in payload


# ---- status and overdue ----------------------------------------------------------------------


def test_open_task_past_due_is_overdue_and_not_before() -> None:
    task = make(due_at="2026-03-10T10:00:00Z")
    assert not task.is_overdue(datetime(2026, 3, 10, 10, 0, tzinfo=UTC))
    assert task.is_overdue(datetime(2026, 3, 10, 10, 0, 1, tzinfo=UTC))
    assert task.to_view(datetime(2026, 3, 10, 11, 0, tzinfo=UTC))["overdue"] is True


def test_done_and_canceled_tasks_are_never_overdue() -> None:
    later = datetime(2026, 4, 1, tzinfo=UTC)
    done, _ = complete_task(make(due_at="2026-03-10T10:00:00Z"), None, NOW)
    canceled, _ = cancel_task(make(due_at="2026-03-10T10:00:00Z"), NOW)
    assert not done.is_overdue(later)
    assert not canceled.is_overdue(later)


def test_status_filter_open_includes_overdue_and_overdue_is_open_past_due() -> None:
    past = make("p", due_at="2026-03-10T08:00:00Z")
    future = make("f", due_at="2026-03-10T18:00:00Z")
    done, _ = complete_task(make("d", due_at="2026-03-10T08:00:00Z"), {}, NOW)
    tasks = [past, future, done]
    assert [t.id for t in tasks if matches_status(t, "open", NOW)] == ["p", "f"]
    assert [t.id for t in tasks if matches_status(t, "overdue", NOW)] == ["p"]
    assert [t.id for t in tasks if matches_status(t, "done", NOW)] == ["d"]
    assert status_filter("overdue", NOW) == {"status": "open", "due_at": {"$lt": NOW}}
    assert status_filter("open", NOW) == {"status": "open"}
    with pytest.raises(ValidationFailed) as info:
        status_filter("late", NOW)
    assert set(info.value.errors) == {"status"}


# ---- complete / cancel -----------------------------------------------------------------------


def test_complete_records_result_and_emits_task_completed_once() -> None:
    task = make()
    done, events = complete_task(task, {"result": "  договорились  "}, NOW)
    assert done.status == "done" and done.result == "договорились"
    assert done.completed_at == NOW and done.version == 2
    assert [e["event_type"] for e in events] == ["task.completed"]
    assert events[0]["payload"]["result"] == "договорились"
    again, events2 = complete_task(done, {"result": "x"}, NOW)
    assert again is done and events2 == []


def test_cancel_then_complete_is_a_conflict_and_changes_are_refused() -> None:
    canceled, events = cancel_task(make(), NOW)
    assert canceled.status == "canceled" and [e["event_type"] for e in events] == ["task.canceled"]
    with pytest.raises(Conflict):
        complete_task(canceled, None, NOW)
    with pytest.raises(Conflict):
        update_task(canceled, {"title": "new"}, NOW)
    done, _ = complete_task(make(), None, NOW)
    with pytest.raises(Conflict):
        cancel_task(done, NOW)


# ---- update ----------------------------------------------------------------------------------


def test_update_emits_updated_with_changed_fields_and_reassigned_on_new_assignee() -> None:
    task = make(assignee_id="u1")
    new, events = update_task(task, {"title": "Call again", "assignee_id": "u2"}, NOW)
    assert (new.title, new.assignee_id, new.version) == ("Call again", "u2", 2)
    assert [e["event_type"] for e in events] == ["task.updated", "task.reassigned"]
    assert events[0]["payload"]["changes"] == ["assignee_id", "title"]
    assert events[1]["payload"]["previous_assignee_id"] == "u1"
    assert events[1]["payload"]["assignee_id"] == "u2"


def test_update_with_the_same_values_changes_nothing() -> None:
    task = make(assignee_id="u1")
    same, events = update_task(task, {"assignee_id": "u1", "kind": "call"}, NOW)
    assert same is task and events == []


def test_update_refuses_null_for_required_fields_and_allows_clearing_optional() -> None:
    task = make(contact_id="c1")
    with pytest.raises(ValidationFailed) as info:
        update_task(task, {"due_at": None}, NOW)
    assert set(info.value.errors) == {"due_at"}
    cleared, _ = update_task(task, {"contact_id": None}, NOW)
    assert cleared.contact_id is None


# ---- reminders -------------------------------------------------------------------------------


def test_reminder_fields_follow_due_at_minus_remind_before() -> None:
    task = make(due_at="2026-03-10T12:00:00Z", remind_before_s=900)
    assert task.remind_at == datetime(2026, 3, 10, 11, 45, tzinfo=UTC)
    assert task.reminder_sent_at is None and task.overdue_sent_at is None
    assert make(due_at="2026-03-10T12:00:00Z").remind_at is None


def test_reminder_is_due_only_in_its_window_and_fires_once() -> None:
    task = make(due_at="2026-03-10T12:00:00Z", remind_before_s=900)
    assert not reminder_is_due(task, datetime(2026, 3, 10, 11, 44, tzinfo=UTC))
    at = datetime(2026, 3, 10, 11, 46, tzinfo=UTC)
    sent, events = mark_reminder_sent(task, at)
    assert sent.reminder_sent_at == at
    assert [e["event_type"] for e in events] == ["task.reminder_due"]
    assert events[0]["payload"]["task_id"] == task.id
    assert mark_reminder_sent(sent, at) == (sent, [])
    # a reminder caught up after the due time is not sent: task.overdue covers it
    assert not reminder_is_due(task, datetime(2026, 3, 10, 12, 1, tzinfo=UTC))


def test_overdue_notice_fires_once_after_due() -> None:
    task = make(due_at="2026-03-10T12:00:00Z")
    assert mark_overdue_sent(task, datetime(2026, 3, 10, 11, 59, tzinfo=UTC)) == (task, [])
    at = datetime(2026, 3, 10, 12, 5, tzinfo=UTC)
    notified, events = mark_overdue_sent(task, at)
    assert notified.overdue_sent_at == at
    assert [e["event_type"] for e in events] == ["task.overdue"]
    assert mark_overdue_sent(notified, at) == (notified, [])


def test_reschedule_moves_the_reminder_and_re_arms_both_notices() -> None:
    task = make(due_at="2026-03-10T12:00:00Z", remind_before_s=600)
    task, _ = mark_reminder_sent(task, datetime(2026, 3, 10, 11, 55, tzinfo=UTC))
    task, _ = mark_overdue_sent(task, datetime(2026, 3, 10, 12, 5, tzinfo=UTC))
    later = datetime(2026, 3, 10, 12, 10, tzinfo=UTC)
    moved, events = update_task(task, {"due_at": "2026-03-11T12:00:00+03:00"}, later)
    assert moved.due_at == datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
    assert moved.remind_at == datetime(2026, 3, 11, 8, 50, tzinfo=UTC)
    assert moved.reminder_sent_at is None and moved.overdue_sent_at is None
    assert next_reminder_fields(moved) == {
        "remind_at": moved.remind_at,
        "reminder_sent_at": None,
        "overdue_sent_at": None,
    }
    assert events[0]["payload"]["changes"] == ["due_at"]
    assert events[0]["payload"]["due_at"] == "2026-03-11T09:00:00+00:00"
    # and it fires again at the new time
    assert reminder_is_due(moved, datetime(2026, 3, 11, 8, 51, tzinfo=UTC))


def test_changing_only_remind_before_moves_remind_at_but_keeps_overdue_notice() -> None:
    task = make(due_at="2026-03-10T12:00:00Z", remind_before_s=600)
    task = dataclasses.replace(task, overdue_sent_at=NOW)
    moved, _ = update_task(task, {"remind_before_s": 3600}, NOW)
    assert moved.remind_at == datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
    assert moved.overdue_sent_at == NOW
    removed, _ = update_task(moved, {"remind_before_s": None}, NOW)
    assert removed.remind_at is None and not reminder_is_due(removed, removed.due_at)


def test_claim_filters_select_what_the_python_predicates_select() -> None:
    assert reminder_claim_filter(NOW) == {
        "status": "open",
        "remind_at": {"$ne": None, "$lte": NOW},
        "reminder_sent_at": None,
        "due_at": {"$gt": NOW},
    }
    assert overdue_claim_filter(NOW) == {
        "status": "open",
        "due_at": {"$lt": NOW},
        "overdue_sent_at": None,
    }


# ---- documents -------------------------------------------------------------------------------


def test_task_round_trips_through_a_mongo_document_with_naive_datetimes() -> None:
    task = make(assignee_id="u1", remind_before_s=60)
    task = dataclasses.replace(task, rule_chain=("r1",), caused_by_rule="r1")
    doc = task.to_doc()
    assert doc["_id"] == "t1" and "id" not in doc and doc["rule_chain"] == ["r1"]
    # pymongo hands datetimes back naive (UTC) unless tz_aware=True
    stored = {k: (v.replace(tzinfo=None) if isinstance(v, datetime) else v) for k, v in doc.items()}
    stored["unknown_field"] = 1
    assert Task.from_doc(stored) == task


# ---- reassign --------------------------------------------------------------------------------


def test_bulk_reassign_moves_only_open_tasks_of_the_source_user() -> None:
    a = make("a", assignee_id="u1")
    b = make("b", assignee_id="u1")
    c = make("c", assignee_id="u2")
    d, _ = complete_task(make("d", assignee_id="u1"), None, NOW)
    changed, events = bulk_reassign([a, b, c, d], {"from_user_id": "u1", "to_user_id": "u3"}, NOW)
    assert [(t.id, t.assignee_id) for t in changed] == [("a", "u3"), ("b", "u3")]
    reassigned = [e for e in events if e["event_type"] == "task.reassigned"]
    assert [e["payload"]["task_id"] for e in reassigned] == ["a", "b"]
    assert all(e["payload"]["previous_assignee_id"] == "u1" for e in reassigned)


def test_bulk_reassign_restricted_to_task_ids() -> None:
    tasks = [make("a", assignee_id="u1"), make("b", assignee_id="u1")]
    body = {"from_user_id": "u1", "to_user_id": "u3", "task_ids": ["b", "zzz"]}
    changed, _ = bulk_reassign(tasks, body, NOW)
    assert [t.id for t in changed] == ["b"]
    assert bulk_reassign_filter(body) == {
        "status": "open",
        "assignee_id": "u1",
        "_id": {"$in": ["b", "zzz"]},
    }


def test_bulk_reassign_to_the_same_user_or_without_target_is_422() -> None:
    with pytest.raises(ValidationFailed) as info:
        bulk_reassign([], {"from_user_id": "u1", "to_user_id": "u1"}, NOW)
    assert set(info.value.errors) == {"to_user_id"}
    with pytest.raises(ValidationFailed) as info:
        bulk_reassign([], {"from_user_id": "u1"}, NOW)
    assert set(info.value.errors) == {"to_user_id"}


# ---- workload --------------------------------------------------------------------------------


def test_workload_counts_open_overdue_and_due_today_per_user() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 15:00 in Moscow
    tasks = [
        make("a", due_at="2026-03-10T09:00:00Z", assignee_id="u1"),  # overdue, today
        make("b", due_at="2026-03-10T18:00:00Z", assignee_id="u1"),  # today (21:00 MSK)
        make("c", due_at="2026-03-12T09:00:00Z", assignee_id="u1"),  # later
        make("d", due_at="2026-03-01T09:00:00Z", assignee_id="u2"),  # overdue, not today
        make("e", due_at="2026-03-10T10:00:00Z"),  # unassigned
        make("f", due_at="2026-03-10T13:00:00Z", assignee_id="ghost"),
    ]
    tasks.append(complete_task(make("g", due_at="2026-03-10T09:00:00Z", assignee_id="u1"), None, now)[0])
    rows = workload(tasks, ["u1", {"user_id": "u2"}, {"id": "u3"}], now)
    assert rows == [
        {"user_id": "u1", "open": 3, "overdue": 1, "due_today": 2},
        {"user_id": "u2", "open": 1, "overdue": 1, "due_today": 0},
        {"user_id": "u3", "open": 0, "overdue": 0, "due_today": 0},
        {"user_id": "ghost", "open": 1, "overdue": 0, "due_today": 1},
    ]


def test_due_today_uses_the_tenant_time_zone() -> None:
    # 22:30 UTC on the 10th: already the 11th in Moscow (UTC+3) and Vladivostok (UTC+10),
    # still the 10th in London (UTC+0 in March)
    now = datetime(2026, 3, 10, 22, 30, tzinfo=UTC)
    tasks = [
        make("a", due_at="2026-03-10T23:00:00Z", assignee_id="u1"),  # MSK 11th 02:00
        make("b", due_at="2026-03-11T06:00:00+03:00", assignee_id="u1"),  # MSK 11th 06:00
        make("c", due_at="2026-03-10T15:00:00Z", assignee_id="u1"),  # MSK 10th 18:00
        make("d", due_at="2026-03-10T12:00:00Z", assignee_id="u1"),  # VLAT 10th 22:00
    ]
    assert workload(tasks, ["u1"], now)[0]["due_today"] == 2  # default Europe/Moscow: a, b
    assert workload(tasks, ["u1"], now, "Europe/London")[0]["due_today"] == 3  # a, c, d
    assert workload(tasks, ["u1"], now, "Asia/Vladivostok")[0]["due_today"] == 3  # a, b, c


def test_workload_rejects_an_unknown_time_zone() -> None:
    with pytest.raises(ValidationFailed):
        workload([], ["u1"], NOW, "Mars/Olympus")
