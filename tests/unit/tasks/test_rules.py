"""Automation rules: validation, conditions, built-in rules, round robin, loop protection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.tasks.domain import ValidationFailed
from services.tasks.rules import (
    MAX_RULE_CHAIN,
    MISSED_CALL_CALLBACK,
    NEW_LEAD_FIRST_CONTACT,
    STAGE_TASKS,
    Condition,
    Rule,
    RuleContext,
    StageTask,
    apply_create_task,
    condition_holds,
    default_rules,
    effective_rules,
    evaluate,
    parse_assignee,
    parse_rule,
    parse_stage_task,
    updated_counters,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def missed_call(**payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contact_id": "c1",
        "channel_id": "ch1",
        "interaction_id": "i1",
        "kind": "call",
        "direction": "in",
        "data": {"status": "missed", "duration_s": 0},
    }
    body.update(payload)
    return {"event_id": "e1", "event_type": "interaction.recorded", "payload": body}


def rule(**fields: Any) -> Rule:
    body: dict[str, Any] = {
        "id": "r1",
        "name": "Test rule",
        "event_type": "deal.stage_changed",
        "conditions": [],
        "actions": [{"type": "create_task", "title": "Follow up", "kind": "email"}],
    }
    body.update(fields)
    return parse_rule(body)


# ---- conditions ------------------------------------------------------------------------------

PAYLOAD: dict[str, Any] = {
    "kind": "Call",
    "amount": 1500,
    "price": "99.5",
    "occurred_at": "2026-03-10T12:00:00+03:00",
    "data": {"status": "missed", "tags": ["vip", "Москва"], "note": "Перезвонить после обеда"},
    "items": [{"id": "x1"}],
    "empty": None,
}

CASES: list[tuple[str, str, Any, bool]] = [
    ("kind", "eq", "call", True),  # strings compare case-insensitively
    ("kind", "eq", "email", False),
    ("data.status", "ne", "answered", True),
    ("data.status", "ne", "missed", False),
    ("missing.path", "ne", "x", True),
    ("data.status", "in", ["missed", "busy"], True),
    ("data.status", "in", ["answered"], False),
    ("data.status", "not_in", ["answered", "failed"], True),
    ("data.status", "not_in", ["missed"], False),
    ("amount", "gt", 1000, True),
    ("amount", "gt", 1500, False),
    ("amount", "gte", 1500, True),
    ("amount", "gte", 1501, False),
    ("amount", "lt", 2000, True),
    ("amount", "lt", 1500, False),
    ("amount", "lte", 1500, True),
    ("amount", "lte", 1499.99, False),
    ("price", "gt", 99, True),  # numeric strings compare as numbers
    ("occurred_at", "gt", "2026-03-10T08:59:00Z", True),  # ISO datetimes compare as instants
    ("occurred_at", "gt", "2026-03-10T09:00:00Z", False),
    ("missing", "gt", 1, False),
    ("kind", "gt", 1, False),  # incomparable → false, not an error
    ("data.note", "contains", "перезвонить", True),
    ("data.note", "contains", "утром", False),
    ("data.tags", "contains", "москва", True),
    ("data.tags", "contains", "spb", False),
    ("items.0.id", "eq", "x1", True),
    ("items.5.id", "exists", True, False),
    ("data.status", "exists", True, True),
    ("data.status", "exists", False, False),
    ("empty", "exists", True, False),
    ("missing", "exists", False, True),
]


@pytest.mark.parametrize(("field", "op", "value", "expected"), CASES)
def test_condition_operator(field: str, op: str, value: Any, expected: bool) -> None:
    cond = Condition(field=field, op=op, value=value)  # type: ignore[arg-type]
    assert condition_holds(cond, PAYLOAD) is expected


def test_every_condition_must_hold() -> None:
    r = rule(
        conditions=[
            {"field": "to_stage_id", "op": "eq", "value": "s2"},
            {"field": "amount", "op": "gte", "value": 1000},
        ]
    )
    ctx = RuleContext(now=NOW)
    hit = {"event_type": "deal.stage_changed", "payload": {"to_stage_id": "s2", "amount": 5000}}
    miss = {"event_type": "deal.stage_changed", "payload": {"to_stage_id": "s2", "amount": 10}}
    assert len(evaluate([r], hit, ctx)) == 1
    assert evaluate([r], miss, ctx) == []
    other_type = {"event_type": "deal.won", "payload": {"to_stage_id": "s2", "amount": 5000}}
    assert evaluate([r], other_type, ctx) == []


# ---- validation ------------------------------------------------------------------------------


def test_rule_validation_reports_each_bad_field() -> None:
    body = {
        "id": "r1",
        "name": "",
        "event_type": "Deal Changed",
        "conditions": [
            {"field": "data status", "op": "eq", "value": 1},
            {"field": "amount", "op": "between", "value": [1, 2]},
            {"field": "kind", "op": "in", "value": "call"},
        ],
        "actions": [
            {"type": "create_task", "title": "x", "kind": "call", "assignee": "boss"},
            {"type": "webhook", "url": "ftp://example.com/x"},
            {"type": "launch_rocket"},
        ],
    }
    with pytest.raises(ValidationFailed) as info:
        parse_rule(body)
    errors = info.value.errors
    assert info.value.status == 422
    for field in (
        "name",
        "event_type",
        "conditions.0.field",
        "conditions.1.op",
        "conditions.2.value",
        "actions.0.assignee",
        "actions.1.url",
        "actions.2",
    ):
        assert field in errors, (field, errors)


def test_rule_needs_at_least_one_action_and_cannot_take_a_builtin_id() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_rule({"id": MISSED_CALL_CALLBACK, "name": "x", "event_type": "a.b", "actions": []})
    assert set(info.value.errors) == {"id", "actions"}


def test_rule_round_trips_through_a_document() -> None:
    r = rule(
        conditions=[{"field": "amount", "op": "gt", "value": 5}],
        actions=[
            {"type": "move_deal", "stage_id": "s9"},
            {"type": "webhook", "url": "https://x.io/h"},
        ],
    )
    doc = r.to_doc()
    assert doc["_id"] == "r1"
    assert Rule.from_doc({**doc, "tenant_id": "ten1"}) == r


@pytest.mark.parametrize(
    ("raw", "mode", "ids"),
    [
        ("owner", "owner", ()),
        ("user:u7", "user", ("u7",)),
        ("round_robin:u1,u2", "round_robin", ("u1", "u2")),
        ('round_robin:["u1", "u2", "u3"]', "round_robin", ("u1", "u2", "u3")),
    ],
)
def test_assignee_forms(raw: str, mode: str, ids: tuple[str, ...]) -> None:
    spec = parse_assignee(raw)
    assert (spec.mode, spec.user_ids) == (mode, ids)


@pytest.mark.parametrize("raw", ["user:", "round_robin:[]", "manager"])
def test_bad_assignee_is_rejected(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_assignee(raw)


# ---- missed call default rule ----------------------------------------------------------------


def test_missed_call_creates_one_callback_task_for_the_contact_owner() -> None:
    ctx = RuleContext(now=NOW, contact_owner_id="owner1", channel_owner_id="chowner")
    actions = evaluate(default_rules(), missed_call(), ctx)
    assert len(actions) == 1
    action = actions[0]
    assert action.type == "create_task" and action.rule_id == MISSED_CALL_CALLBACK
    assert action.params == {
        "title": "Call back",
        "kind": "call",
        "due_at": NOW + timedelta(minutes=15),
        "assignee_id": "owner1",
        "contact_id": "c1",
        "deal_id": None,
        "remind_before_s": None,
    }
    assert action.subject_id == "c1"
    assert action.idempotency_key == f"rule:{MISSED_CALL_CALLBACK}:e1:0"


def test_missed_call_without_contact_owner_goes_to_the_channel_owner() -> None:
    ctx = RuleContext(now=NOW, channel_owner_id="chowner")
    [action] = evaluate(default_rules(), missed_call(), ctx)
    assert action.params["assignee_id"] == "chowner"


def test_missed_call_owner_may_come_in_the_event_payload() -> None:
    event = missed_call(contact_owner_id="owner9", channel_owner_id="chowner")
    [action] = evaluate(default_rules(), event, RuleContext(now=NOW))
    assert action.params["assignee_id"] == "owner9"


@pytest.mark.parametrize(
    "change",
    [
        {"direction": "out"},
        {"kind": "email"},
        {"data": {"status": "answered", "duration_s": 40}},
    ],
)
def test_answered_or_outbound_calls_create_no_task(change: dict[str, Any]) -> None:
    assert evaluate(default_rules(), missed_call(**change), RuleContext(now=NOW)) == []


def test_the_same_event_twice_gives_the_same_idempotency_key() -> None:
    ctx = RuleContext(now=NOW, contact_owner_id="o")
    first = evaluate(default_rules(), missed_call(), ctx)
    second = evaluate(default_rules(), missed_call(), ctx)
    assert [a.idempotency_key for a in first] == [a.idempotency_key for a in second]
    no_id = missed_call()
    del no_id["event_id"]
    assert evaluate(default_rules(), no_id, ctx)[0].idempotency_key == (
        evaluate(default_rules(), dict(no_id), ctx)[0].idempotency_key
    )


def test_apply_create_task_makes_the_task_and_stamps_the_causation() -> None:
    [action] = evaluate(default_rules(), missed_call(), RuleContext(now=NOW, contact_owner_id="o"))
    task, events = apply_create_task(action, task_id="t1", tenant_id="ten1", now=NOW)
    assert (task.title, task.kind, task.assignee_id, task.contact_id) == (
        "Call back",
        "call",
        "o",
        "c1",
    )
    assert task.due_at == NOW + timedelta(minutes=15)
    assert task.caused_by_rule == MISSED_CALL_CALLBACK
    payload = events[0]["payload"]
    assert payload["caused_by_rule"] == MISSED_CALL_CALLBACK
    assert payload["rule_chain"] == [MISSED_CALL_CALLBACK]
    assert payload["caused_by_subject"] == "c1"


# ---- disabling -------------------------------------------------------------------------------


def test_switched_off_default_rule_does_nothing() -> None:
    rules = effective_rules([], disabled_rule_ids=[MISSED_CALL_CALLBACK])
    assert MISSED_CALL_CALLBACK not in [r.id for r in rules]
    ctx = RuleContext(now=NOW, contact_owner_id="o")
    assert evaluate(rules, missed_call(), ctx) == []


def test_disabled_custom_rule_does_nothing() -> None:
    r = rule(enabled=False)
    event = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d1"}}
    assert evaluate([r], event, RuleContext(now=NOW)) == []
    assert len(evaluate([rule()], event, RuleContext(now=NOW))) == 1


# ---- other built-in rules --------------------------------------------------------------------


def test_new_form_lead_gets_a_first_contact_task_within_an_hour() -> None:
    event = {
        "event_type": "contact.created",
        "payload": {
            "contact_id": "c5",
            "owner_id": "u2",
            "source": {"channel_id": "ch1", "kind": "tilda"},
            "channel_owner_id": "u3",
            "interaction_kind": "form",
        },
    }
    [action] = evaluate(default_rules(), event, RuleContext(now=NOW))
    assert action.rule_id == NEW_LEAD_FIRST_CONTACT
    assert action.params["due_at"] == NOW + timedelta(hours=1)
    assert action.params["assignee_id"] == "u2"
    assert action.params["contact_id"] == "c5"
    by_call = {
        "event_type": "contact.created",
        "payload": {"contact_id": "c6", "source": {"kind": "twilio"}, "interaction_kind": "call"},
    }
    assert evaluate(default_rules(), by_call, RuleContext(now=NOW)) == []
    manual = {"event_type": "contact.created", "payload": {"contact_id": "c7", "source": {"kind": "manual"}}}
    assert evaluate(default_rules(), manual, RuleContext(now=NOW)) == []


def test_ad_lead_without_contact_owner_goes_to_the_channel_owner() -> None:
    event = {
        "event_type": "contact.created",
        "payload": {
            "contact_id": "c8",
            "owner_id": None,
            "source": {"channel_id": "ch2", "kind": "meta_leads"},
            "channel_owner_id": "u7",
            "interaction_kind": "ad_lead",
        },
    }
    [action] = evaluate(default_rules(), event, RuleContext(now=NOW))
    assert action.rule_id == NEW_LEAD_FIRST_CONTACT
    assert action.params["assignee_id"] == "u7"


def test_missed_call_as_contacts_records_it_goes_to_the_contact_owner_in_owner_id() -> None:
    # the real interaction.recorded payload: owner_id is the contact's owner
    event: dict[str, Any] = {
        "event_id": "e9",
        "event_type": "interaction.recorded",
        "payload": {
            "interaction_id": "i1",
            "contact_id": "c9",
            "owner_id": "u1",
            "channel_id": "ch1",
            "channel_kind": "asterisk",
            "channel_owner_id": "u2",
            "kind": "call",
            "direction": "in",
            "occurred_at": NOW.isoformat(),
            "data": {"status": "missed"},
        },
    }
    [action] = evaluate(default_rules(), event, RuleContext(now=NOW))
    assert action.params["assignee_id"] == "u1"
    event["payload"]["owner_id"] = None
    [action] = evaluate(default_rules(), event, RuleContext(now=NOW))
    assert action.params["assignee_id"] == "u2"


def test_stage_change_creates_the_tasks_configured_for_the_entered_stage() -> None:
    ctx = RuleContext(
        now=NOW,
        deal_owner_id="u4",
        stage_tasks={
            "s2": [
                StageTask(title="Send proposal", kind="proposal", due_in_s=86400),
                {"title": "Book a meeting", "kind": "meeting", "assignee": "user:u9"},
                {"title": ""},  # invalid leftover: skipped
            ],
            "s3": [StageTask(title="Not this one")],
        },
    )
    event = {
        "event_id": "e7",
        "event_type": "deal.stage_changed",
        "payload": {
            "deal_id": "d1",
            "contact_id": "c1",
            "from_stage_id": "s1",
            "to_stage_id": "s2",
        },
    }
    actions = evaluate(default_rules(), event, ctx)
    assert [(a.rule_id, a.params["title"], a.params["assignee_id"]) for a in actions] == [
        (STAGE_TASKS, "Send proposal", "u4"),
        (STAGE_TASKS, "Book a meeting", "u9"),
    ]
    assert all(a.params["deal_id"] == "d1" and a.subject_id == "d1" for a in actions)
    assert len({a.idempotency_key for a in actions}) == 2


def test_stage_task_configuration_is_validated() -> None:
    assert parse_stage_task({"title": "Call", "kind": "call"}).due_in_s == 86400
    with pytest.raises(ValidationFailed) as info:
        parse_stage_task({"title": "Call", "kind": "visit", "assignee": "nobody"})
    assert set(info.value.errors) == {"kind", "assignee"}


# ---- round robin -----------------------------------------------------------------------------


def test_round_robin_rotates_through_users_with_the_returned_counter() -> None:
    r = rule(actions=[{"type": "create_task", "title": "Qualify", "assignee": "round_robin:a,b,c"}])
    event = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d1"}}
    counters: dict[str, int] = {}
    picked = []
    for _ in range(4):
        actions = evaluate([r], event, RuleContext(now=NOW, round_robin=counters))
        picked.append(actions[0].params["assignee_id"])
        counters = updated_counters(counters, actions)
    assert picked == ["a", "b", "c", "a"]
    assert counters == {"r1:0": 4}


def test_round_robin_counter_does_not_move_when_nothing_fires() -> None:
    r = rule(
        conditions=[{"field": "amount", "op": "gt", "value": 10}],
        actions=[{"type": "create_task", "title": "Qualify", "assignee": "round_robin:a,b"}],
    )
    event = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d1", "amount": 1}}
    actions = evaluate([r], event, RuleContext(now=NOW, round_robin={"r1:0": 1}))
    assert actions == [] and updated_counters({"r1:0": 1}, actions) == {"r1:0": 1}


# ---- other actions ---------------------------------------------------------------------------


def test_assign_move_and_webhook_actions_are_concrete() -> None:
    r = rule(
        actions=[
            {"type": "assign_owner", "user_id": "u5"},
            {"type": "move_deal", "stage_id": "s9"},
            {"type": "webhook", "url": "https://hooks.example.com/crm"},
        ]
    )
    event = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d1", "contact_id": "c1"}}
    actions = evaluate([r], event, RuleContext(now=NOW))
    assert [(a.type, a.params.get("user_id") or a.params.get("stage_id")) for a in actions[:2]] == [
        ("assign_owner", "u5"),
        ("move_deal", "s9"),
    ]
    assert actions[1].params["deal_id"] == "d1"
    assert actions[2].params == {"url": "https://hooks.example.com/crm", "event": event, "secret": None}


# ---- loop protection -------------------------------------------------------------------------


def test_event_caused_by_a_rule_does_not_retrigger_it_for_the_same_subject() -> None:
    mover = rule(id="mover", actions=[{"type": "move_deal", "stage_id": "s3"}])
    event = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d1", "to_stage_id": "s2"}}
    [action] = evaluate([mover], event, RuleContext(now=NOW))
    # the deals service moved the deal and stamped the causation on its event
    echoed = {
        "event_type": "deal.stage_changed",
        "payload": {"deal_id": "d1", "to_stage_id": "s3", **action.causation()},
    }
    assert evaluate([mover], echoed, RuleContext(now=NOW)) == []


def test_caused_by_rule_at_top_level_also_blocks_the_loop() -> None:
    mover = rule(id="mover", actions=[{"type": "move_deal", "stage_id": "s3"}])
    echoed = {
        "event_type": "deal.stage_changed",
        "caused_by_rule": "mover",
        "payload": {"deal_id": "d1", "to_stage_id": "s3"},
    }
    assert evaluate([mover], echoed, RuleContext(now=NOW)) == []


def test_a_rule_still_fires_for_another_subject_and_other_rules_still_fire() -> None:
    mover = rule(id="mover", actions=[{"type": "move_deal", "stage_id": "s3"}])
    other = rule(id="other")
    causation = {"caused_by_rule": "mover", "rule_chain": ["mover"], "caused_by_subject": "d1"}
    same = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d1", **causation}}
    different = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d2", **causation}}
    assert [a.rule_id for a in evaluate([mover, other], same, RuleContext(now=NOW))] == ["other"]
    assert [a.rule_id for a in evaluate([mover], different, RuleContext(now=NOW))] == ["mover"]


def test_a_rule_does_not_fire_again_further_down_its_own_chain() -> None:
    a = rule(id="a", actions=[{"type": "move_deal", "stage_id": "s3"}])
    b = rule(id="b", actions=[{"type": "move_deal", "stage_id": "s2"}])
    ctx = RuleContext(now=NOW)
    event: dict[str, Any] = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d1"}}
    fired = []
    for _ in range(5):
        actions = evaluate([a, b], event, ctx)
        if not actions:
            break
        first = actions[0]
        fired.append(first.rule_id)
        event = {
            "event_type": "deal.stage_changed",
            "payload": {"deal_id": "d1", **first.causation()},
        }
    # a moves, then b reacts to a's move, then nothing: a and b are both up the chain
    assert fired == ["a", "b"]


def test_a_long_causal_chain_stops_every_rule() -> None:
    r = rule(id="fresh")
    event = {"event_type": "deal.stage_changed", "payload": {"deal_id": "d1"}}
    short = {**event, "rule_chain": [f"r{i}" for i in range(MAX_RULE_CHAIN - 1)]}
    too_long = {**event, "rule_chain": [f"r{i}" for i in range(MAX_RULE_CHAIN)]}
    assert len(evaluate([r], short, RuleContext(now=NOW))) == 1
    assert evaluate([r], too_long, RuleContext(now=NOW)) == []
