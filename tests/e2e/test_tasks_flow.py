"""Tasks end to end through the gateway: automation from a PBX hook, custom rules, workload, the
calendar feed and access rules."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from icalendar import Calendar

from tests.support.hub import Api, eventually, touches

pytestmark = pytest.mark.e2e

MSK = ZoneInfo("Europe/Moscow")


def new_user(admin: Api, name: str, role: str = "manager") -> tuple[str, Api]:
    email = f"u{uuid.uuid4().hex[:12]}@example.com"
    r = admin.post("/api/v1/users", json={"name": name, "email": email, "role": role})
    assert r.status_code == 201, r.text
    return r.json()["user_id"], admin.as_key(r.json()["api_key"])


def asterisk_channel(admin: Api, owner_id: str) -> dict[str, Any]:
    r = admin.post(
        "/api/v1/channels",
        json={"kind": "asterisk", "name": "Office PBX", "intake": "auto", "owner_id": owner_id},
    )
    assert r.status_code == 201, r.text
    return r.json()


def cdr(src: str, disposition: str, started: datetime) -> dict[str, Any]:
    local = started.astimezone(MSK)
    uid = f"{int(time.time())}.{uuid.uuid4().int % 100000}"
    return {
        "uniqueid": uid,
        "linkedid": uid,
        "src": src,
        "dst": "101",
        "did": "74951234567",
        "clid": f'"{src}" <{src}>',
        "start": local.strftime("%Y-%m-%d %H:%M:%S"),
        "end": (local + timedelta(seconds=25)).strftime("%Y-%m-%d %H:%M:%S"),
        "duration": "25",
        "billsec": "0" if disposition != "ANSWERED" else "20",
        "disposition": disposition,
    }


def post_hook(channel: dict[str, Any], body: dict[str, Any]) -> None:
    r = httpx.post(
        channel["webhook_url"], content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text


def tasks_of(api: Api, **params: Any) -> list[dict[str, Any]]:
    r = api.get("/api/v1/tasks", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def contact_by_phone(admin: Api, phone: str) -> dict[str, Any] | None:
    items = admin.get("/api/v1/contacts", params={"phone": phone}).json()["items"]
    return items[0] if items else None


def received(admin: Api, channel: dict[str, Any]) -> int:
    return int(admin.get(f"/api/v1/channels/{channel['id']}").json()["health"]["received"])


def test_missed_call_posted_twice_makes_one_call_back_task_for_the_channel_owner(admin: Api) -> None:
    manager_id, manager = new_user(admin, "Мария")
    channel = asterisk_channel(admin, manager_id)
    started = datetime.now(UTC).replace(microsecond=0)
    body = cdr("89161112233", "NO ANSWER", started)
    post_hook(channel, body)
    post_hook(channel, body)

    contact = eventually(lambda: contact_by_phone(admin, "+79161112233"))
    assert contact["owner_id"] == manager_id
    eventually(lambda: received(admin, channel) == 2)
    [task] = eventually(lambda: tasks_of(admin, contact_id=contact["id"]))
    time.sleep(1.0)  # give a duplicate the time to appear, then count again
    [task] = tasks_of(admin, contact_id=contact["id"])
    assert (task["title"], task["kind"], task["status"]) == ("Call back", "call", "open")
    assert task["assignee_id"] == manager_id
    assert task["caused_by_rule"] == "missed_call_callback"
    due = datetime.fromisoformat(task["due_at"])
    assert due == started + timedelta(minutes=15)
    # the manager sees it as its own work
    assert [t["id"] for t in tasks_of(manager, status="open")] == [task["id"]]


def test_missed_call_from_a_known_contact_goes_to_its_owner_not_the_channel_owner(admin: Api) -> None:
    owner_id, _ = new_user(admin, "Олег")
    on_duty_id, _ = new_user(admin, "Дежурный")
    r = admin.post(
        "/api/v1/contacts", json={"name": "Пётр", "phones": ["8 (903) 222-33-44"], "owner_id": owner_id}
    )
    assert r.status_code == 201, r.text
    contact = r.json()
    channel = asterisk_channel(admin, on_duty_id)
    post_hook(channel, cdr("89032223344", "NO ANSWER", datetime.now(UTC)))
    post_hook(channel, cdr("89032223344", "ANSWERED", datetime.now(UTC)))  # answered: no task
    [task] = eventually(lambda: tasks_of(admin, contact_id=contact["id"]))
    eventually(lambda: received(admin, channel) == 2)
    eventually(lambda: len(touches(admin, contact["id"])) == 2)
    time.sleep(0.5)
    [task] = tasks_of(admin, contact_id=contact["id"])
    assert task["assignee_id"] == owner_id


def test_custom_rule_with_conditions_creates_tasks_only_when_they_hold(admin: Api) -> None:
    manager_id, _ = new_user(admin, "Анна")
    senior_id, _ = new_user(admin, "Борис")
    rule = {
        "name": "Busy line → senior calls back in 30 min",
        "event_type": "interaction.recorded",
        "conditions": [
            {"field": "kind", "op": "eq", "value": "call"},
            {"field": "data.status", "op": "in", "value": ["busy", "failed"]},
            {"field": "channel_kind", "op": "eq", "value": "asterisk"},
        ],
        "actions": [
            {
                "type": "create_task",
                "title": "Перезвонить: было занято",
                "kind": "call",
                "due_in_s": 1800,
                "assignee": f"user:{senior_id}",
            }
        ],
    }
    r = admin.post("/api/v1/automation-rules", json=rule)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["builtin"] is False and created["enabled"] is True
    listed = admin.get("/api/v1/automation-rules").json()["items"]
    ids = [x["id"] for x in listed]
    assert ids[:4] == [
        "missed_call_callback",
        "missed_call_inbox_callback",
        "new_lead_first_contact",
        "stage_tasks",
    ]
    assert created["id"] in ids

    bad = {**rule, "conditions": [{"field": "kind", "op": "in", "value": "call"}]}
    r = admin.post("/api/v1/automation-rules", json=bad)
    assert r.status_code == 422
    assert "conditions.0.value" in r.json()["errors"]

    channel = asterisk_channel(admin, manager_id)
    started = datetime.now(UTC).replace(microsecond=0)
    post_hook(channel, cdr("89165550001", "BUSY", started))
    post_hook(channel, cdr("89165550002", "ANSWERED", started))
    busy = eventually(lambda: contact_by_phone(admin, "+79165550001"))
    answered = eventually(lambda: contact_by_phone(admin, "+79165550002"))
    [task] = eventually(lambda: tasks_of(admin, contact_id=busy["id"]))
    assert task["title"] == "Перезвонить: было занято"
    assert task["assignee_id"] == senior_id
    assert datetime.fromisoformat(task["due_at"]) == started + timedelta(minutes=30)
    assert task["caused_by_rule"] == created["id"]
    eventually(lambda: touches(admin, answered["id"]))
    time.sleep(0.5)
    assert tasks_of(admin, contact_id=answered["id"]) == []

    # switched off: a new busy call makes nothing
    r = admin.patch(f"/api/v1/automation-rules/{created['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = admin.patch("/api/v1/automation-rules/missed_call_callback", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert admin.get("/api/v1/automation-rules/missed_call_callback").json()["enabled"] is False
    post_hook(channel, cdr("89165550003", "BUSY", started))
    post_hook(channel, cdr("89165550004", "NO ANSWER", started))
    later: list[dict[str, Any]] = []
    for phone in ("+79165550003", "+79165550004"):
        later.append(eventually(lambda phone=phone: contact_by_phone(admin, phone)))  # type: ignore[misc]
    for c in later:
        eventually(lambda c=c: touches(admin, c["id"]))  # type: ignore[misc]
    time.sleep(0.5)
    assert all(tasks_of(admin, contact_id=c["id"]) == [] for c in later)


def test_task_lifecycle_workload_reassign_and_calendar(admin: Api) -> None:
    anna_id, anna = new_user(admin, "Анна")
    boris_id, boris = new_user(admin, "Борис")
    now = datetime.now(UTC).replace(microsecond=0)
    today_msk = now.astimezone(MSK)
    later_today = now + timedelta(minutes=5)  # "due today" unless the Moscow day ends first

    def create(api: Api, **body: Any) -> dict[str, Any]:
        r = api.post("/api/v1/tasks", json={"kind": "call", **body})
        assert r.status_code == 201, r.text
        return r.json()

    overdue = create(anna, title="Позвонить Ивану", due_at=(now - timedelta(minutes=1)).isoformat())
    assert overdue["assignee_id"] == anna_id  # a manager's task is its own
    assert overdue["overdue"] is True
    # the hub's scheduler announces it (task.overdue) within a pass or two
    notified = eventually(lambda: anna.get(f"/api/v1/tasks/{overdue['id']}").json()["overdue_sent_at"])
    assert datetime.fromisoformat(notified) >= now
    today = create(anna, title="Встреча", kind="meeting", due_at=later_today.isoformat(), remind_before_s=600)
    future = create(
        admin, title="КП", kind="proposal", due_at=(now + timedelta(days=3)).isoformat(), assignee_id=anna_id
    )
    for_boris = create(
        admin, title="Boris task", due_at=(now + timedelta(days=3)).isoformat(), assignee_id=boris_id
    )

    r = anna.post(
        "/api/v1/tasks",
        json={"title": "x", "kind": "call", "due_at": now.isoformat(), "assignee_id": boris_id},
    )
    assert r.status_code == 422
    r = admin.post("/api/v1/tasks", json={"title": "x", "kind": "call", "due_at": "2026-11-27T10:00:00"})
    assert r.status_code == 422  # no UTC offset

    assert [t["id"] for t in tasks_of(anna, status="overdue")] == [overdue["id"]]
    assert {t["id"] for t in tasks_of(anna, status="open")} == {overdue["id"], today["id"], future["id"]}
    assert [
        t["id"]
        for t in tasks_of(admin, assignee_id=anna_id, due_before=(now + timedelta(days=1)).isoformat())
    ] == [
        overdue["id"],
        today["id"],
    ]
    assert anna.get(f"/api/v1/tasks/{for_boris['id']}").status_code == 404  # not visible to her
    # pagination
    page1 = admin.get("/api/v1/tasks", params={"limit": 2}).json()
    assert len(page1["items"]) == 2 and page1["next_cursor"]
    page2 = admin.get("/api/v1/tasks", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert {t["id"] for t in page1["items"] + page2["items"]} == {
        overdue["id"],
        today["id"],
        future["id"],
        for_boris["id"],
    }

    def rows() -> dict[str, dict[str, Any]]:
        r = admin.get("/api/v1/workload")
        assert r.status_code == 200, r.text
        return {x["user_id"]: x for x in r.json()["items"]}

    def both_known() -> dict[str, dict[str, Any]] | None:
        x = rows()
        return x if anna_id in x and boris_id in x else None

    w = eventually(both_known)
    expected_today = 2 if later_today.astimezone(MSK).date() == today_msk.date() else 1
    if (now - timedelta(minutes=1)).astimezone(MSK).date() != today_msk.date():
        expected_today -= 1
    assert (w[anna_id]["open"], w[anna_id]["overdue"], w[anna_id]["due_today"]) == (3, 1, expected_today)
    assert (w[boris_id]["open"], w[boris_id]["overdue"]) == (1, 0)

    # complete with a result; PATCH moves the due time
    r = anna.post(f"/api/v1/tasks/{overdue['id']}/complete", json={"result": "Договорились на пятницу"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "done" and r.json()["result"] == "Договорились на пятницу"
    r = anna.patch(f"/api/v1/tasks/{overdue['id']}", json={"title": "again"})
    assert r.status_code == 409
    # its reminder time (due - 10 min) has already come: the scheduler sends it; a reschedule re-arms it
    eventually(lambda: anna.get(f"/api/v1/tasks/{today['id']}").json()["reminder_sent_at"])
    moved_to = now + timedelta(days=5)
    r = anna.patch(f"/api/v1/tasks/{today['id']}", json={"due_at": moved_to.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["remind_at"] == (moved_to - timedelta(minutes=10)).isoformat()
    assert r.json()["reminder_sent_at"] is None
    w = rows()
    assert (w[anna_id]["open"], w[anna_id]["overdue"], w[anna_id]["due_today"]) == (2, 0, 0)

    # calendar feed: no API key, the token of /users/me
    url = anna.get("/api/v1/users/me").json()["calendar_url"]
    feed = httpx.get(url)
    assert feed.status_code == 200, feed.text
    assert feed.headers["content-type"].startswith("text/calendar")
    cal = Calendar.from_ical(feed.content)
    events = {str(e["uid"]): e for e in cal.walk("VEVENT")}
    assert set(events) == {f"{today['id']}@crm-hub", f"{future['id']}@crm-hub"}
    meeting = events[f"{today['id']}@crm-hub"]
    assert str(meeting["summary"]) == "Встреча"
    assert meeting.decoded("dtstart") == moved_to
    assert meeting.walk("VALARM")
    assert httpx.get(url.split("?")[0] + "?token=nope").status_code == 404
    assert httpx.get(url.split("?")[0]).status_code == 401

    # bulk reassignment: Anna's open tasks go to Boris
    r = admin.post("/api/v1/tasks/reassign", json={"from_user_id": anna_id, "to_user_id": boris_id})
    assert r.status_code == 200, r.text
    assert r.json()["reassigned"] == 2
    w = rows()
    assert (w[anna_id]["open"], w[boris_id]["open"]) == (0, 3)
    assert {t["id"] for t in tasks_of(boris, status="open")} == {today["id"], future["id"], for_boris["id"]}
    r = anna.post("/api/v1/tasks/reassign", json={"from_user_id": boris_id, "to_user_id": anna_id})
    assert r.status_code == 403


def test_viewer_cannot_create_and_other_tenant_gets_404(admin: Api, root: Api) -> None:
    _, viewer = new_user(admin, "Viewer", role="viewer")
    due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = viewer.post("/api/v1/tasks", json={"title": "x", "kind": "call", "due_at": due})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    r = admin.post("/api/v1/tasks", json={"title": "Секрет", "kind": "email", "due_at": due})
    assert r.status_code == 201
    task = r.json()
    assert task["assignee_id"] is None
    assert viewer.get(f"/api/v1/tasks/{task['id']}").status_code == 200  # unassigned: every reader sees it
    assert viewer.patch(f"/api/v1/tasks/{task['id']}", json={"title": "y"}).status_code == 403
    other = root.as_key(root.post("/api/v1/tenants", json={"name": "Other"}).json()["api_key"])
    assert other.get(f"/api/v1/tasks/{task['id']}").status_code == 404
    assert other.patch(f"/api/v1/tasks/{task['id']}", json={"title": "mine"}).status_code == 404
    assert other.post(f"/api/v1/tasks/{task['id']}/complete", json={}).status_code == 404
    assert tasks_of(other) == []
    assert (
        viewer.post(
            "/api/v1/automation-rules",
            json={
                "name": "x",
                "event_type": "contact.created",
                "actions": [{"type": "webhook", "url": "https://e.x/h"}],
            },
        ).status_code
        == 403
    )


def test_missed_call_from_an_unknown_number_in_the_inbox_still_gets_one_call_back_task(admin: Api) -> None:
    """On an ``intake: inbox`` channel the caller is no contact yet: the call waits in the inbox,
    and the channel's owner still gets one call-back task (the hook delivered twice)."""
    on_duty_id, on_duty = new_user(admin, "Дежурный")
    r = admin.post(
        "/api/v1/channels",
        json={"kind": "asterisk", "name": "PBX inbox", "intake": "inbox", "owner_id": on_duty_id},
    )
    assert r.status_code == 201, r.text
    channel = r.json()
    started = datetime.now(UTC).replace(microsecond=0)
    body = cdr("89165550099", "NO ANSWER", started)
    post_hook(channel, body)
    post_hook(channel, body)

    items = eventually(lambda: admin.get("/api/v1/inbox", params={"status": "pending"}).json()["items"])
    assert [i["interaction"]["data"]["status"] for i in items] == ["missed"]
    assert contact_by_phone(admin, "+79165550099") is None
    [task] = eventually(lambda: tasks_of(on_duty, status="open"))
    time.sleep(1.0)  # a duplicate would have appeared by now
    [task] = tasks_of(on_duty, status="open")
    assert task["kind"] == "call" and task["assignee_id"] == on_duty_id
    assert task["caused_by_rule"] == "missed_call_inbox_callback"
    assert datetime.fromisoformat(task["due_at"]) == started + timedelta(minutes=15)


def test_tasks_contacts_and_channels_refuse_references_to_nothing_in_the_tenant(
    admin: Api, root: Api
) -> None:
    due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"title": "Перезвонить", "kind": "call", "due_at": due}
    bad = {"contact_id": "nope", "deal_id": "nope", "assignee_id": "nope"}
    r = admin.post("/api/v1/tasks", json={**body, **bad})
    assert r.status_code == 422, r.text
    assert set(r.json()["errors"]) == {"contact_id", "deal_id", "assignee_id"}
    assert tasks_of(admin) == []

    left_id, _ = new_user(admin, "Уволенный")
    assert admin.patch(f"/api/v1/users/{left_id}", json={"active": False}).status_code == 200
    task = admin.post("/api/v1/tasks", json=body).json()
    r = admin.patch(f"/api/v1/tasks/{task['id']}", json={"assignee_id": left_id})
    assert r.status_code == 422 and r.json()["errors"] == {
        "assignee_id": "is not an active user of this tenant"
    }
    me = admin.get("/api/v1/users/me").json()["id"]
    reassign = {"from_user_id": me, "task_ids": [task["id"]], "to_user_id": left_id}
    r = admin.post("/api/v1/tasks/reassign", json=reassign)
    assert r.status_code == 422 and set(r.json()["errors"]) == {"to_user_id"}

    other = root.as_key(root.post("/api/v1/tenants", json={"name": "Other"}).json()["api_key"])
    other_tenants_user = other.get("/api/v1/users/me").json()["id"]
    r = admin.post("/api/v1/contacts", json={"name": "Ан", "owner_id": other_tenants_user})
    assert r.status_code == 422 and set(r.json()["errors"]) == {"owner_id"}
    r = admin.post("/api/v1/channels", json={"kind": "form", "name": "Сайт", "owner_id": "nope"})
    assert r.status_code == 422 and set(r.json()["errors"]) == {"owner_id"}

    # a viewer is refused for its role before any reference is looked up
    _, viewer = new_user(admin, "Viewer", role="viewer")
    assert viewer.post("/api/v1/tasks", json={**body, **bad}).status_code == 403
