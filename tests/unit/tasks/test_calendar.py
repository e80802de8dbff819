"""iCalendar feed: parses back with icalendar and holds the open tasks with their alarms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from icalendar import Calendar, Component

from services.tasks.calendar import render_calendar, task_uid
from services.tasks.domain import Task, cancel_task, complete_task, create_task, update_task

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def make(task_id: str, **fields: object) -> Task:
    body: dict[str, object] = {
        "title": "Перезвонить клиенту; обсудить счёт, договор",
        "kind": "call",
        "due_at": "2026-03-10T15:00:00+03:00",
        "assignee_id": "u1",
    }
    body.update(fields)
    task, _ = create_task(body, task_id=task_id, tenant_id="ten1", now=NOW)
    return task


def parse(data: bytes) -> Calendar:
    return Calendar.from_ical(data)


def events_by_uid(cal: Calendar) -> dict[str, Component]:
    return {str(ev["UID"]): ev for ev in cal.walk("VEVENT")}


def test_feed_has_the_calendar_headers() -> None:
    cal = parse(render_calendar({"id": "u1"}, [], NOW, "Задачи — Иван"))
    assert cal.name == "VCALENDAR"
    assert str(cal["VERSION"]) == "2.0"
    assert "crm-hub" in str(cal["PRODID"])
    assert str(cal["X-WR-CALNAME"]) == "Задачи — Иван"
    assert str(cal["METHOD"]) == "PUBLISH"
    assert cal.walk("VEVENT") == []


def test_each_open_task_is_one_event_with_its_times_and_text() -> None:
    call = make("t1", remind_before_s=900)
    meeting = make("t2", kind="meeting", title="Встреча", due_at="2026-03-11T10:00:00Z")
    cal = parse(render_calendar({"id": "u1"}, [call, meeting], NOW, "Tasks"))
    events = events_by_uid(cal)
    assert set(events) == {"t1@crm-hub", "t2@crm-hub"}

    ev1 = events["t1@crm-hub"]
    assert ev1.decoded("DTSTART") == datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert ev1.decoded("DURATION") == timedelta(minutes=30)
    assert ev1.decoded("DTSTAMP") == NOW
    assert str(ev1["SUMMARY"]) == "Перезвонить клиенту; обсудить счёт, договор"
    assert "Call" in str(ev1["DESCRIPTION"])
    assert str(ev1["STATUS"]) == "CONFIRMED"

    ev2 = events["t2@crm-hub"]
    assert ev2.decoded("DTSTART") == datetime(2026, 3, 11, 10, 0, tzinfo=UTC)
    assert ev2.decoded("DURATION") == timedelta(hours=1)
    assert str(ev2["SUMMARY"]) == "Встреча"


def test_task_with_a_reminder_carries_a_display_alarm_before_the_start() -> None:
    with_reminder = make("t1", remind_before_s=900)
    without = make("t2")
    events = events_by_uid(parse(render_calendar("u1", [with_reminder, without], NOW)))
    alarms = events["t1@crm-hub"].walk("VALARM")
    assert len(alarms) == 1
    assert str(alarms[0]["ACTION"]) == "DISPLAY"
    assert alarms[0].decoded("TRIGGER") == timedelta(minutes=-15)
    assert str(alarms[0]["DESCRIPTION"])  # DISPLAY alarms need a description
    assert events["t2@crm-hub"].walk("VALARM") == []


def test_done_canceled_and_other_users_tasks_are_left_out() -> None:
    done, _ = complete_task(make("done"), None, NOW)
    canceled, _ = cancel_task(make("canceled"), NOW)
    foreign = make("foreign", assignee_id="u2")
    unassigned = make("unassigned", assignee_id=None)
    open_task = make("open")
    tasks = [done, canceled, foreign, unassigned, open_task]
    data = render_calendar({"user_id": "u1"}, tasks, NOW)
    assert set(events_by_uid(parse(data))) == {"open@crm-hub"}


def test_uid_is_stable_across_renders_and_reschedules() -> None:
    task = make("t1")
    first = events_by_uid(parse(render_calendar("u1", [task], NOW)))
    moved, _ = update_task(task, {"due_at": "2026-03-12T10:00:00Z"}, NOW)
    later = NOW + timedelta(hours=1)
    second = events_by_uid(parse(render_calendar("u1", [moved], later)))
    assert set(first) == set(second) == {task_uid("t1")}
    ev = second[task_uid("t1")]
    assert ev.decoded("DTSTART") == datetime(2026, 3, 12, 10, 0, tzinfo=UTC)
    # SEQUENCE goes up so clients replace the old copy
    assert ev.decoded("SEQUENCE") > first[task_uid("t1")].decoded("SEQUENCE")


def test_feed_is_crlf_folded_utf8_as_rfc5545_requires() -> None:
    task = make("t1", title="Очень длинное название задачи " * 5)
    data = render_calendar("u1", [task], NOW)
    text = data.decode("utf-8")
    lines = text.split("\r\n")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert all(len(line.encode("utf-8")) <= 75 for line in lines)
    assert lines[0] == "BEGIN:VCALENDAR"
    # folding keeps the title intact when parsed back
    ev = parse(data).walk("VEVENT")[0]
    assert str(ev["SUMMARY"]) == task.title
