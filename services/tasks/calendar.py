"""The user's open tasks as an iCalendar (RFC 5545) subscription feed.

One ``VEVENT`` per open task: stable ``UID`` ``<task_id>@crm-hub`` (so a re-fetch updates the
event instead of duplicating it), ``DTSTART`` in UTC at ``due_at``, ``DURATION`` 30 min (1 h for
meetings), ``SEQUENCE`` from the task version, and a ``VALARM`` ``remind_before_s`` before the
start when the task has a reminder. ``METHOD:PUBLISH`` plus ``REFRESH-INTERVAL`` /
``X-PUBLISHED-TTL`` tell Google Calendar and Outlook how often to poll.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from icalendar import Alarm, Calendar, Event, vDuration, vText

from services.tasks.domain import Task, _utc

PRODID = "-//crm-hub//tasks calendar//EN"
UID_DOMAIN = "crm-hub"
DEFAULT_DURATION = timedelta(minutes=30)
MEETING_DURATION = timedelta(hours=1)
REFRESH_INTERVAL = timedelta(minutes=15)

KIND_LABELS: dict[str, str] = {
    "call": "Call",
    "meeting": "Meeting",
    "email": "Email",
    "proposal": "Proposal",
    "other": "Task",
}


def task_uid(task_id: str) -> str:
    """The stable iCalendar UID of a task."""
    return f"{task_id}@{UID_DOMAIN}"


def event_duration(task: Task) -> timedelta:
    return MEETING_DURATION if task.kind == "meeting" else DEFAULT_DURATION


def _description(task: Task, now: datetime) -> str:
    lines = [f"Kind: {KIND_LABELS.get(task.kind, task.kind)}"]
    if task.is_overdue(now):
        lines.append("Overdue")
    if task.contact_id:
        lines.append(f"Contact: {task.contact_id}")
    if task.deal_id:
        lines.append(f"Deal: {task.deal_id}")
    lines.append(f"Task: {task.id}")
    return "\n".join(lines)


def task_event(task: Task, now: datetime) -> Event:
    """The ``VEVENT`` of one task (with its ``VALARM`` when a reminder is set)."""
    start = _utc(task.due_at)
    ev = Event()
    ev.add("uid", task_uid(task.id))
    ev.add("dtstamp", _utc(now))
    ev.add("dtstart", start)
    ev.add("duration", event_duration(task))
    ev.add("summary", task.title)
    ev.add("description", _description(task, now))
    ev.add("status", "CONFIRMED")
    ev.add("transp", "OPAQUE")
    ev.add("sequence", max(task.version - 1, 0))
    ev.add("created", _utc(task.created_at))
    ev.add("last-modified", _utc(task.updated_at))
    ev.add("categories", [KIND_LABELS.get(task.kind, task.kind)])
    if task.remind_before_s is not None:
        alarm = Alarm()
        alarm.add("uid", f"{task.id}-reminder@{UID_DOMAIN}")
        alarm.add("action", "DISPLAY")
        alarm.add("description", task.title)
        alarm.add("trigger", -timedelta(seconds=task.remind_before_s))
        ev.add_component(alarm)
    return ev


def _user_label(user: Mapping[str, Any] | str) -> str | None:
    if isinstance(user, str):
        return user
    for key in ("user_id", "id", "_id"):
        if user.get(key) is not None:
            return str(user[key])
    return None


def render_calendar(
    user: Mapping[str, Any] | str,
    tasks: Iterable[Task],
    now: datetime,
    calendar_name: str = "CRM tasks",
) -> bytes:
    """The iCalendar feed (UTF-8 bytes, CRLF lines) of ``user``'s open tasks.

    ``tasks`` should be the user's tasks; done/canceled ones and, when ``user`` carries an id
    (``user_id``/``id``/``_id`` or a plain id string), tasks not assigned to that user
    (unassigned ones included) are left out. Events are ordered by due time, then id, so the
    same state renders the same bytes (apart from ``DTSTAMP``)."""
    user_id = _user_label(user)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", calendar_name)
    cal.add("name", calendar_name)
    cal.add("refresh-interval", vDuration(REFRESH_INTERVAL), parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", vText(_ttl(REFRESH_INTERVAL)))
    selected = [t for t in tasks if t.status == "open" and (user_id is None or t.assignee_id == user_id)]
    for task in sorted(selected, key=lambda t: (_utc(t.due_at), t.id)):
        cal.add_component(task_event(task, now))
    return cal.to_ical()


def _ttl(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"PT{minutes}M"


__all__ = [
    "DEFAULT_DURATION",
    "MEETING_DURATION",
    "PRODID",
    "event_duration",
    "render_calendar",
    "task_event",
    "task_uid",
]
