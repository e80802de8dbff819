"""The tasks service on a real MongoDB-protocol server, without the broker: two service instances
share one database and one frozen clock; what they publish is recorded. The scheduler pass is
called directly, so nothing sleeps."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.tasks.service import TasksService
from shared.clock import FrozenClock
from shared.errors import AppError, ValidationFailed
from shared.events import Envelope, make_event
from shared.mongo import mongo_client
from shared.settings import Settings
from tests.support.services import RecordingPublisher, offline_runtime

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


Factory = Callable[[], TasksService]


@pytest.fixture
async def make_service(mongo_url: str) -> AsyncIterator[tuple[Factory, FrozenClock, RecordingPublisher]]:
    """Build TasksService instances on one fresh database (``<ns>_tasks``)."""
    ns = f"it{uuid.uuid4().hex[:10]}"
    settings = Settings(namespace=ns, mongo_url=mongo_url)
    clock = FrozenClock(T0)
    recorder = RecordingPublisher()
    clients: list[Any] = []

    def factory() -> TasksService:
        client = mongo_client(mongo_url)
        clients.append(client)
        return TasksService(offline_runtime(settings, client, recorder, clock))

    yield factory, clock, recorder
    if clients:
        await clients[0].drop_database(settings.db_name("tasks"))
    for c in clients:
        await c.close()


ADMIN = {"tenant_id": "ten-a", "user_id": "u-admin", "role": "admin", "settings": {"timezone": "UTC"}}


def ctx(**kw: Any) -> dict[str, Any]:
    return {**ADMIN, **kw}


async def new_task(svc: TasksService, **body: Any) -> dict[str, Any]:
    base = {"title": "Call Ivan", "kind": "call", "due_at": (T0 + timedelta(hours=1)).isoformat()}
    return await svc.create_task(ADMIN, {"body": {**base, **body}})


async def test_reminder_fires_once_across_two_replicas(make_service: Any) -> None:
    factory, clock, rec = make_service
    a, b = factory(), factory()
    await a.prepare()
    await b.prepare()
    task = await new_task(a, assignee_id="u1", remind_before_s=900)
    assert task["remind_at"] == (T0 + timedelta(minutes=45)).isoformat()

    await asyncio.gather(a.scheduler_pass(), b.scheduler_pass())
    assert rec.of("task.reminder_due") == []  # not yet due

    clock.advance(46 * 60)
    results = await asyncio.gather(a.scheduler_pass(), b.scheduler_pass(), a.scheduler_pass())
    assert sum(r["reminders"] for r in results) == 1
    await asyncio.gather(a.scheduler_pass(), b.scheduler_pass())
    [reminder] = rec.of("task.reminder_due")
    assert reminder.payload["task_id"] == task["id"]
    assert reminder.payload["assignee_id"] == "u1"
    assert reminder.tenant_id == "ten-a"
    assert await a.db.outbox.count_documents({}) == 0

    clock.advance(20 * 60)  # past due: one overdue notice, still one reminder
    await asyncio.gather(a.scheduler_pass(), b.scheduler_pass())
    await asyncio.gather(a.scheduler_pass(), b.scheduler_pass())
    assert len(rec.of("task.reminder_due")) == 1
    assert [e.payload["task_id"] for e in rec.of("task.overdue")] == [task["id"]]


async def test_many_due_reminders_are_split_between_replicas_without_repeats(make_service: Any) -> None:
    factory, clock, rec = make_service
    a, b = factory(), factory()
    await a.prepare()
    ids = {(await new_task(a, assignee_id="u1", remind_before_s=600))["id"] for _ in range(12)}
    clock.advance(55 * 60)
    await asyncio.gather(a.scheduler_pass(), b.scheduler_pass(), b.scheduler_pass())
    sent = [e.payload["task_id"] for e in rec.of("task.reminder_due")]
    assert sorted(sent) == sorted(ids)


async def test_reminder_due_while_down_fires_after_restart(make_service: Any) -> None:
    factory, clock, rec = make_service
    first = factory()
    await first.prepare()
    task = await new_task(first, assignee_id="u2", remind_before_s=1800)
    await first.scheduler_pass()
    await first.stop()
    del first  # the service is down while the reminder time passes

    clock.advance(40 * 60)
    restarted = factory()
    await restarted.prepare()
    assert rec.of("task.reminder_due") == []
    counts = await restarted.scheduler_pass()
    assert counts == {"reminders": 1, "overdue": 0}
    [reminder] = rec.of("task.reminder_due")
    assert reminder.payload["task_id"] == task["id"]

    again = factory()  # a second restart sends nothing again
    await again.scheduler_pass()
    assert len(rec.of("task.reminder_due")) == 1


async def test_rescheduling_moves_the_reminder_and_it_fires_again(make_service: Any) -> None:
    factory, clock, rec = make_service
    svc = factory()
    await svc.prepare()
    task = await new_task(svc, assignee_id="u1", remind_before_s=600)
    clock.advance(51 * 60)
    await svc.scheduler_pass()
    assert len(rec.of("task.reminder_due")) == 1

    new_due = T0 + timedelta(hours=3)
    moved = await svc.update_task(ADMIN, {"task_id": task["id"], "changes": {"due_at": new_due.isoformat()}})
    assert moved["remind_at"] == (new_due - timedelta(minutes=10)).isoformat()
    await svc.scheduler_pass()
    assert len(rec.of("task.reminder_due")) == 1  # the new time has not come

    clock.advance(2 * 3600)  # now 10 min before the new due time... minus one minute
    await svc.scheduler_pass()
    reminders = rec.of("task.reminder_due")
    assert len(reminders) == 2
    assert reminders[1].payload["due_at"] == new_due.isoformat()
    assert reminders[0].event_id != reminders[1].event_id


async def test_completed_task_sends_no_reminder(make_service: Any) -> None:
    factory, clock, rec = make_service
    svc = factory()
    await svc.prepare()
    task = await new_task(svc, assignee_id="u1", remind_before_s=600)
    done = await svc.complete_task(ADMIN, {"task_id": task["id"], "body": {"result": "Reached him"}})
    assert done["status"] == "done" and done["result"] == "Reached him"
    clock.advance(3 * 3600)
    assert await svc.scheduler_pass() == {"reminders": 0, "overdue": 0}
    assert [e.event_type for e in rec.sent] == ["task.created", "task.completed"]


def recorded_call(interaction_id: str, *, status: str = "missed", owner: str | None = "u-owner") -> Envelope:
    return make_event(
        "interaction.recorded",
        tenant_id="ten-a",
        producer="contacts",
        payload={
            "interaction_id": interaction_id,
            "contact_id": "c-1",
            "owner_id": owner,
            "channel_id": "ch-1",
            "channel_kind": "asterisk",
            "channel_owner_id": "u-channel",
            "kind": "call",
            "direction": "in",
            "occurred_at": T0.isoformat(),
            "data": {"status": status},
        },
    )


async def test_missed_call_twice_and_re_recorded_makes_one_call_back_task(make_service: Any) -> None:
    factory, _, rec = make_service
    a, b = factory(), factory()
    await a.prepare()
    env = recorded_call("i-1")
    re_recorded = recorded_call("i-1")  # same interaction, another event (the call was updated)
    assert env.event_id != re_recorded.event_id
    await asyncio.gather(a.on_rule_event(env), b.on_rule_event(env), b.on_rule_event(re_recorded))
    await a.on_rule_event(env)
    page = await a.list_tasks(ADMIN, {"filters": {"contact_id": "c-1"}})
    [task] = page["items"]
    assert (task["title"], task["kind"], task["assignee_id"]) == ("Call back", "call", "u-owner")
    assert task["due_at"] == (T0 + timedelta(minutes=15)).isoformat()
    assert task["caused_by_rule"] == "missed_call_callback"
    assert len(rec.of("task.created")) == 1


async def test_missed_call_without_contact_owner_goes_to_channel_owner_answered_call_to_nobody(
    make_service: Any,
) -> None:
    factory, _, _ = make_service
    svc = factory()
    await svc.prepare()
    await svc.on_rule_event(recorded_call("i-2", owner=None))
    await svc.on_rule_event(recorded_call("i-3", status="answered"))
    [task] = (await svc.list_tasks(ADMIN, {}))["items"]
    assert task["assignee_id"] == "u-channel"


async def test_switched_off_builtin_rule_creates_nothing(make_service: Any) -> None:
    factory, _, _ = make_service
    svc = factory()
    await svc.prepare()
    view = await svc.update_rule(ADMIN, {"rule_id": "missed_call_callback", "changes": {"enabled": False}})
    assert view["enabled"] is False
    await svc.on_rule_event(recorded_call("i-4"))
    assert (await svc.list_tasks(ADMIN, {}))["items"] == []


async def test_stage_tasks_and_round_robin_and_command_actions(make_service: Any) -> None:
    factory, _, rec = make_service
    svc = factory()
    await svc.prepare()
    await svc.update_rule(
        ADMIN,
        {
            "rule_id": "stage_tasks",
            "changes": {"stage_tasks": {"s-2": [{"title": "Send proposal", "kind": "proposal"}]}},
        },
    )
    await svc.create_rule(
        ADMIN,
        {
            "body": {
                "id": "big-deals",
                "name": "Big deals",
                "event_type": "deal.stage_changed",
                "conditions": [{"field": "amount", "op": "gte", "value": 100000}],
                "actions": [
                    {"type": "create_task", "title": "Check", "assignee": "round_robin:u1,u2"},
                    {"type": "webhook", "url": "https://example.com/hook", "secret": "rule-secret-1"},
                ],
            }
        },
    )

    def moved(deal: str, amount: str) -> Envelope:
        return make_event(
            "deal.stage_changed",
            tenant_id="ten-a",
            producer="deals",
            payload={
                "deal_id": deal,
                "to_stage_id": "s-2",
                "amount": amount,
                "owner_id": "u9",
                "contact_id": "c",
            },
        )

    await svc.on_rule_event(moved("d1", "150000.00"))
    await svc.on_rule_event(moved("d2", "200000"))
    await svc.on_rule_event(moved("d3", "10"))
    items = (await svc.list_tasks(ADMIN, {"limit": 100}))["items"]
    proposals = sorted((t["deal_id"], t["assignee_id"]) for t in items if t["title"] == "Send proposal")
    assert proposals == [("d1", "u9"), ("d2", "u9"), ("d3", "u9")]
    checks = sorted((t["deal_id"], t["assignee_id"]) for t in items if t["title"] == "Check")
    assert checks == [("d1", "u1"), ("d2", "u2")]
    hooks = rec.of("rule.webhook_requested")
    assert [h.payload["event"]["payload"]["deal_id"] for h in hooks] == ["d1", "d2"]
    assert hooks[0].payload["caused_by_rule"] == "big-deals"
    # The rule's signing secret travels sealed with the installation's key, never in plain text.
    sealed = hooks[0].payload["secret"]
    assert sealed.startswith("sealed:") and "rule-secret-1" not in json.dumps(hooks[0].payload)
    assert svc.rt.secrets.open(sealed.removeprefix("sealed:")) == {"secret": "rule-secret-1"}


async def test_a_rule_webhook_needs_a_secret_that_is_never_shown(make_service: Any) -> None:
    factory, _, _ = make_service
    svc = factory()
    await svc.prepare()
    body = {
        "id": "wh",
        "name": "Hook",
        "event_type": "deal.won",
        "actions": [{"type": "webhook", "url": "https://example.com/h"}],
    }
    with pytest.raises(ValidationFailed) as exc:
        await svc.create_rule(ADMIN, {"body": body})
    assert set(exc.value.errors) == {"actions.0.secret"}
    body["actions"] = [{"type": "webhook", "url": "https://example.com/h", "secret": "rule-secret-2"}]
    view = await svc.create_rule(ADMIN, {"body": body})
    assert view["actions"] == [{"type": "webhook", "url": "https://example.com/h", "secret_set": True}]
    # An update that does not repeat the secret keeps it; a forged sealed value is refused.
    view = await svc.update_rule(ADMIN, {"rule_id": "wh", "changes": {"name": "Renamed"}})
    assert view["actions"][0]["secret_set"] is True
    forged = [{"type": "webhook", "url": "https://example.com/h2", "secret": "sealed:abc"}]
    with pytest.raises(ValidationFailed):
        await svc.update_rule(ADMIN, {"rule_id": "wh", "changes": {"actions": forged}})
    assert "rule-secret-2" not in json.dumps((await svc.get_rule(ADMIN, {"rule_id": "wh"})), default=str)


async def test_workload_counts_and_bulk_reassign(make_service: Any) -> None:
    factory, _, rec = make_service
    svc = factory()
    await svc.prepare()
    for uid, name, role in (("u1", "Anna", "manager"), ("u2", "Boris", "manager"), ("u3", "Vera", "viewer")):
        await svc.on_user_changed(
            make_event(
                "user.changed",
                tenant_id="ten-a",
                producer="gateway",
                payload={"user_id": uid, "name": name, "role": role},
            )
        )
    await new_task(svc, assignee_id="u1", due_at=(T0 - timedelta(hours=2)).isoformat())  # overdue, today
    await new_task(svc, assignee_id="u1", due_at=(T0 + timedelta(hours=3)).isoformat())  # today
    await new_task(svc, assignee_id="u1", due_at=(T0 + timedelta(days=2)).isoformat())  # later
    done = await new_task(svc, assignee_id="u1")
    await svc.complete_task(ADMIN, {"task_id": done["id"], "body": {}})
    rows = {r["user_id"]: r for r in (await svc.workload(ADMIN, {}))["items"]}
    assert set(rows) == {"u1", "u2"}
    assert (rows["u1"]["open"], rows["u1"]["overdue"], rows["u1"]["due_today"]) == (3, 1, 2)
    assert (rows["u2"]["open"], rows["u2"]["overdue"], rows["u2"]["due_today"]) == (0, 0, 0)
    assert rows["u1"]["name"] == "Anna"

    out = await svc.reassign_tasks(ADMIN, {"body": {"from_user_id": "u1", "to_user_id": "u2"}})
    assert out["reassigned"] == 3
    rows = {r["user_id"]: r for r in (await svc.workload(ADMIN, {}))["items"]}
    assert (rows["u1"]["open"], rows["u2"]["open"], rows["u2"]["overdue"]) == (0, 3, 1)
    assert len(rec.of("task.reassigned")) == 3


async def test_manager_sees_own_tasks_other_tenant_sees_nothing(make_service: Any) -> None:
    factory, _, _ = make_service
    svc = factory()
    await svc.prepare()
    mine = await new_task(svc, assignee_id="u1")
    theirs = await new_task(svc, assignee_id="u2")
    manager = ctx(user_id="u1", role="manager")
    assert [t["id"] for t in (await svc.list_tasks(manager, {}))["items"]] == [mine["id"]]
    with pytest.raises(AppError) as err:
        await svc.get_task(manager, {"task_id": theirs["id"]})
    assert err.value.status == 404
    with pytest.raises(AppError) as err:
        await svc.get_task(ctx(tenant_id="ten-b"), {"task_id": mine["id"]})
    assert err.value.status == 404
    with pytest.raises(AppError) as err:
        await svc.create_task(
            ctx(role="viewer"), {"body": {"title": "x", "kind": "call", "due_at": T0.isoformat()}}
        )
    assert err.value.status == 403


async def test_contact_merge_repoints_and_erase_clears_titles(make_service: Any) -> None:
    factory, _, _ = make_service
    svc = factory()
    await svc.prepare()
    task = await new_task(svc, contact_id="c-old", title="Позвонить Ивану Петрову")
    await svc.complete_task(ADMIN, {"task_id": task["id"], "body": {"result": "Иван просил КП"}})
    await svc.on_contact_merged(
        make_event(
            "contact.merged",
            tenant_id="ten-a",
            producer="contacts",
            payload={"contact_id": "c-new", "merged_id": "c-old"},
        )
    )
    exported = await svc.export_contact(ADMIN, {"contact_id": "c-new"})
    assert [t["id"] for t in exported["tasks"]] == [task["id"]]
    assert exported["tasks"][0]["result"] == "Иван просил КП"
    await svc.on_contact_erased(
        make_event("contact.erased", tenant_id="ten-a", producer="contacts", payload={"contact_id": "c-new"})
    )
    [after] = (await svc.export_contact(ADMIN, {"contact_id": "c-new"}))["tasks"]
    assert after["title"] != task["title"] and "Иван" not in after["title"]
    assert after["result"] is None


async def test_rule_does_not_retrigger_on_the_events_its_own_action_caused(make_service: Any) -> None:
    factory, _, rec = make_service
    svc = factory()
    await svc.prepare()
    await svc.create_rule(
        ADMIN,
        {
            "body": {
                "id": "bounce",
                "name": "Qualified deals go to negotiation",
                "event_type": "deal.stage_changed",
                "conditions": [{"field": "to_stage_id", "op": "eq", "value": "s-qualified"}],
                "actions": [{"type": "move_deal", "stage_id": "s-qualified"}],
            }
        },
    )

    def moved(**extra: Any) -> Envelope:
        payload = {"deal_id": "d1", "to_stage_id": "s-qualified", "owner_id": "u1", **extra}
        return make_event("deal.stage_changed", tenant_id="ten-a", producer="deals", payload=payload)

    await svc.on_rule_event(moved())
    [command] = rec.of("rule.move_deal_requested")
    assert command.payload["deal_id"] == "d1" and command.payload["stage_id"] == "s-qualified"
    # deals carried it out and stamped the causation on its event: the rule stays quiet
    await svc.on_rule_event(
        moved(
            caused_by_rule=command.payload["caused_by_rule"],
            rule_chain=command.payload["rule_chain"],
            caused_by_subject=command.payload["caused_by_subject"],
        )
    )
    assert len(rec.of("rule.move_deal_requested")) == 1
    # the same rule on another deal still acts
    await svc.on_rule_event(moved(deal_id="d2", caused_by_rule="bounce", caused_by_subject="d1"))
    assert len(rec.of("rule.move_deal_requested")) == 2


async def test_rules_api_validates_and_protects_builtins(make_service: Any) -> None:
    factory, _, _ = make_service
    svc = factory()
    await svc.prepare()
    body = {
        "id": "r1",
        "name": "Lead from Yandex",
        "event_type": "contact.created",
        "conditions": [{"field": "source.utm_source", "op": "eq", "value": "yandex"}],
        "actions": [{"type": "create_task", "title": "Call", "assignee": "user:u5"}],
    }
    await svc.create_rule(ADMIN, {"body": body})
    for bad, field in (
        ({**body, "id": "r2", "event_type": "task.created"}, "event_type"),
        ({**body, "id": "missed_call_callback"}, "id"),
        (
            {**body, "id": "r3", "actions": [{"type": "create_task", "title": "x", "assignee": "boss"}]},
            "actions.0.assignee",
        ),
    ):
        with pytest.raises(AppError) as err:
            await svc.create_rule(ADMIN, {"body": bad})
        assert err.value.status == 422 and field in err.value.errors, err.value.errors
    with pytest.raises(AppError) as err:
        await svc.create_rule(ADMIN, {"body": body})
    assert err.value.status == 409
    with pytest.raises(AppError) as err:
        await svc.create_rule(ctx(role="manager", user_id="u1"), {"body": {**body, "id": "r4"}})
    assert err.value.status == 403
    with pytest.raises(AppError) as err:
        await svc.update_rule(ADMIN, {"rule_id": "missed_call_callback", "changes": {"conditions": []}})
    assert err.value.status == 422
    updated = await svc.update_rule(
        ADMIN, {"rule_id": "r1", "changes": {"name": "Renamed", "enabled": False}}
    )
    assert (updated["name"], updated["enabled"], updated["event_type"]) == (
        "Renamed",
        False,
        "contact.created",
    )
    assert (await svc.get_rule(ctx(tenant_id="ten-a", role="viewer"), {"rule_id": "r1"}))["name"] == "Renamed"
    with pytest.raises(AppError) as err:
        await svc.get_rule(ctx(tenant_id="ten-b"), {"rule_id": "r1"})
    assert err.value.status == 404
    await svc.delete_rule(ADMIN, {"rule_id": "r1"})
    assert [x["id"] for x in (await svc.list_rules(ADMIN, {}))["items"]] == [
        "missed_call_callback",
        "missed_call_inbox_callback",
        "new_lead_first_contact",
        "stage_tasks",
    ]


async def test_new_form_lead_gets_a_first_contact_task(make_service: Any) -> None:
    factory, _, _ = make_service
    svc = factory()
    await svc.prepare()
    created = make_event(
        "contact.created",
        tenant_id="ten-a",
        producer="contacts",
        payload={
            "contact_id": "c-lead",
            "owner_id": "u3",
            "source": {"channel_id": "ch", "kind": "tilda", "utm_source": "yandex"},
            "channel_owner_id": "u3",
            "interaction_kind": "form",
        },
        occurred_at=T0,
    )
    await svc.on_rule_event(created)
    [task] = (await svc.list_tasks(ADMIN, {"filters": {"contact_id": "c-lead"}}))["items"]
    assert (task["title"], task["assignee_id"]) == ("First contact", "u3")
    assert task["due_at"] == (T0 + timedelta(hours=1)).isoformat()


async def test_a_batch_reads_the_rules_once_and_round_robin_still_turns_per_event(mongo_url: str) -> None:
    """Events handled as one consumer batch share a transaction: the tenant's rules are read
    once for the batch, while the round-robin counters (written by each event) move on per event."""
    from pymongo import AsyncMongoClient

    from shared.dbprofile import CommandCounter

    counter = CommandCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, tz_aware=True, uuidRepresentation="standard", event_listeners=[counter]
    )
    settings = Settings(namespace=f"it{uuid.uuid4().hex[:10]}", mongo_url=mongo_url)
    svc = TasksService(offline_runtime(settings, client, RecordingPublisher(), FrozenClock(T0)))
    try:
        await svc.prepare()
        await svc.create_rule(
            ADMIN,
            {
                "body": {
                    "id": "every-stage",
                    "name": "Every stage",
                    "event_type": "deal.stage_changed",
                    "actions": [{"type": "create_task", "title": "Check", "assignee": "round_robin:u1,u2"}],
                }
            },
        )
        before = counter.snapshot()
        async with svc.store.batch():
            for deal in ("d1", "d2", "d3", "d4"):
                await svc.on_rule_event(
                    make_event(
                        "deal.stage_changed",
                        tenant_id="ten-a",
                        producer="deals",
                        payload={"deal_id": deal, "to_stage_id": "s-2", "owner_id": "u9", "contact_id": "c"},
                    )
                )
        after = counter.snapshot()
        rules_reads = [k for k in after if k.endswith(".rules.find")]
        assert sum(after[k] - before.get(k, 0) for k in rules_reads) == 1
        items = (await svc.list_tasks(ADMIN, {"limit": 100}))["items"]
        checks = sorted((t["deal_id"], t["assignee_id"]) for t in items if t["title"] == "Check")
        assert checks == [("d1", "u1"), ("d2", "u2"), ("d3", "u1"), ("d4", "u2")]
    finally:
        await client.drop_database(settings.db_name("tasks"))
        await client.close()
