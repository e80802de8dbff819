"""Unit tests of the deals domain: pipelines, deals, moves, stage history, money, import."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.deals import domain as d
from services.deals.money import (
    MoneyError,
    canonical_amount,
    normalize_currency,
    parse_amount,
    weighted_amount,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "t1"


class Clock:
    """An injected clock the tests move by hand."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> datetime:
        self.at = self.at + timedelta(**kw)
        return self.at


def ids(prefix: str = "id") -> d.IdFactory:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def make_pipeline(**extra: Any) -> d.Pipeline:
    data = {
        "name": "Sales",
        "stages": [
            {"name": "New", "probability": 10},
            {"name": "Qualified", "probability": 30},
            {"name": "Proposal", "probability": 60},
        ],
        **extra,
    }
    pipeline, _ = d.create_pipeline(TENANT, data, ids("s"), T0)
    return pipeline


def make_deal(pipeline: d.Pipeline, now: datetime = T0, **extra: Any) -> d.Deal:
    data = {
        "title": "Website redesign",
        "contact_id": "c1",
        "amount": "1000",
        "currency": "RUB",
        **extra,
    }
    deal, _ = d.create_deal(TENANT, data, pipeline, ids("deal"), now)
    return deal


def stage_id(pipeline: d.Pipeline, name: str) -> str:
    stage = pipeline.stage_by_name(name)
    assert stage is not None
    return stage.id


def types(events: list[d.Event]) -> list[str]:
    return [e["event_type"] for e in events]


# ------------------------------------------------------------------------------------ pipelines


def test_create_pipeline_appends_won_and_lost_after_open_stages_in_order() -> None:
    pipeline, events = d.create_pipeline(
        TENANT,
        {
            "name": " Sales ",
            "stages": [{"name": "New", "probability": 10}, {"name": "Deal", "probability": 50}],
        },
        ids("s"),
        T0,
    )
    assert pipeline.name == "Sales"
    assert [(s.name, s.probability, s.kind) for s in pipeline.stages] == [
        ("New", 10, "open"),
        ("Deal", 50, "open"),
        ("Won", 100, "won"),
        ("Lost", 0, "lost"),
    ]
    assert len({s.id for s in pipeline.stages}) == 4
    assert pipeline.default is False
    assert types(events) == ["pipeline.created"]
    assert events[0]["payload"]["pipeline_id"] == pipeline.id
    assert [s["kind"] for s in events[0]["payload"]["stages"]] == ["open", "open", "won", "lost"]


def test_create_pipeline_uses_injected_ids_for_stages_and_pipeline() -> None:
    pipeline, _ = d.create_pipeline(
        TENANT, {"name": "P", "stages": [{"name": "A", "probability": 5}]}, ids("x"), T0
    )
    assert [s.id for s in pipeline.stages] == ["x1", "x2", "x3"]
    assert pipeline.id == "x4"


def test_create_pipeline_may_name_terminal_stages_and_set_default() -> None:
    pipeline, _ = d.create_pipeline(
        TENANT,
        {
            "name": "Воронка",
            "default": True,
            "stages": [
                {"name": "Первичный контакт", "probability": 10},
                {"name": "Успешно", "kind": "won"},
                {"name": "Провал", "kind": "lost", "probability": 0},
            ],
        },
        ids(),
        T0,
    )
    assert pipeline.default is True
    assert [(s.name, s.kind) for s in pipeline.stages] == [
        ("Первичный контакт", "open"),
        ("Успешно", "won"),
        ("Провал", "lost"),
    ]


def test_pipeline_validation_names_every_bad_field() -> None:
    with pytest.raises(d.ValidationFailed) as info:
        d.create_pipeline(
            TENANT,
            {
                "name": "  ",
                "default": "yes",
                "stages": [
                    {"name": "New", "probability": 10},
                    {"name": "new", "probability": 101},
                    {"name": "", "probability": "20"},
                    {"name": "Later", "probability": 12.5},
                    {"name": "Flag", "probability": True},
                    {"name": "NoProb"},
                ],
            },
            ids(),
            T0,
        )
    err = info.value
    assert err.status == 422
    assert err.code == "validation_failed"
    assert err.errors == {
        "name": "must not be empty",
        "default": "must be true or false",
        "stages.1.name": "stage names must be unique within a pipeline",
        "stages.1.probability": "must be an integer from 0 to 100",
        "stages.2.name": "must not be empty",
        "stages.2.probability": "must be an integer from 0 to 100",
        "stages.3.probability": "must be an integer from 0 to 100",
        "stages.4.probability": "must be an integer from 0 to 100",
        "stages.5.probability": "is required",
    }


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"stages": [{"name": "A", "probability": 1}]}, {"name": "is required"}),
        ({"name": "P"}, {"stages": "is required"}),
        ({"name": "P", "stages": []}, {"stages": "a pipeline needs at least one open stage"}),
        ({"name": "P", "stages": "A,B"}, {"stages": "must be a list of {name, probability}"}),
        (
            {"name": "P", "stages": [{"name": "A", "probability": 1}, "B"]},
            {"stages.1": "must be an object {name, probability}"},
        ),
        (
            {"name": "P", "stages": [{"name": "A", "probability": -1}]},
            {"stages.0.probability": "must be an integer from 0 to 100"},
        ),
        (
            {"name": "P", "stages": [{"name": "won", "probability": 90}]},
            {"stages.0.name": "is the name of the won stage"},
        ),
        (
            {
                "name": "P",
                "stages": [{"name": "A", "probability": 5}, {"kind": "won", "probability": 50}],
            },
            {"stages.1.probability": "the won stage has probability 100"},
        ),
        (
            {"name": "P", "stages": [{"id": "mine", "name": "A", "probability": 5}]},
            {"stages.0.id": "ids are assigned by the server"},
        ),
    ],
)
def test_pipeline_validation_errors(data: dict[str, Any], errors: dict[str, str]) -> None:
    with pytest.raises(d.ValidationFailed) as info:
        d.create_pipeline(TENANT, data, ids(), T0)
    assert info.value.errors == errors


def test_pipeline_accepts_integral_float_probability_and_bounds() -> None:
    pipeline, _ = d.create_pipeline(
        TENANT,
        {
            "name": "P",
            "stages": [{"name": "A", "probability": 0}, {"name": "B", "probability": 100.0}],
        },
        ids(),
        T0,
    )
    assert [s.probability for s in pipeline.open_stages] == [0, 100]


def test_edit_pipeline_renames_reorders_and_adds_stages_keeping_ids() -> None:
    pipeline = make_pipeline()
    new, qual, prop = (s.id for s in pipeline.open_stages)
    later = T0 + timedelta(days=1)
    edit = d.edit_pipeline(
        pipeline,
        {
            "name": "B2B",
            "stages": [
                {"id": qual, "name": "Qualified lead"},
                {"id": new, "probability": 5},
                {"name": "Negotiation", "probability": 80},
                {"id": prop},
            ],
        },
        ids("n"),
        later,
    )
    p = edit.pipeline
    assert p.name == "B2B"
    assert [(s.id, s.name, s.probability) for s in p.open_stages] == [
        (qual, "Qualified lead", 30),
        (new, "New", 5),
        ("n1", "Negotiation", 80),
        (prop, "Proposal", 60),
    ]
    assert p.won_stage == pipeline.won_stage
    assert p.lost_stage == pipeline.lost_stage
    assert p.updated_at == later and p.created_at == T0
    assert edit.deleted_stage_ids == ()
    assert types(edit.events) == ["pipeline.updated"]


def test_edit_pipeline_renames_terminal_stage_without_changing_its_id() -> None:
    pipeline = make_pipeline()
    edit = d.edit_pipeline(
        pipeline,
        {
            "stages": [
                *({"id": s.id} for s in pipeline.open_stages),
                {"kind": "won", "name": "Closed"},
            ]
        },
        ids("n"),
        T0,
    )
    assert edit.pipeline.won_stage.id == pipeline.won_stage.id
    assert edit.pipeline.won_stage.name == "Closed"
    assert edit.pipeline.lost_stage == pipeline.lost_stage


def test_edit_pipeline_round_trips_its_own_public_stages() -> None:
    pipeline = make_pipeline()
    edit = d.edit_pipeline(pipeline, {"stages": pipeline.to_public()["stages"]}, ids("n"), T0)
    assert edit.pipeline == pipeline
    assert edit.events == []


def test_edit_pipeline_rejects_unknown_stage_id() -> None:
    pipeline = make_pipeline()
    with pytest.raises(d.ValidationFailed) as info:
        d.edit_pipeline(pipeline, {"stages": [{"id": "nope", "name": "X"}]}, ids(), T0)
    assert info.value.errors == {"stages.0.id": "no such stage in this pipeline"}


def test_delete_stage_with_deals_is_a_conflict() -> None:
    pipeline = make_pipeline()
    qual = stage_id(pipeline, "Qualified")
    with pytest.raises(d.Conflict) as info:
        d.delete_stage(pipeline, qual, T0, deal_count=3)
    assert info.value.status == 409
    assert info.value.code == "stage_has_deals"
    assert f"stages.{qual}" in info.value.errors


def test_delete_stage_with_deals_and_target_returns_move_plan() -> None:
    pipeline = make_pipeline()
    qual, prop = stage_id(pipeline, "Qualified"), stage_id(pipeline, "Proposal")
    edit = d.delete_stage(pipeline, qual, T0 + timedelta(hours=1), deal_count=3, target_stage_id=prop)
    assert edit.move_plan == {qual: prop}
    assert edit.deleted_stage_ids == (qual,)
    assert [s.name for s in edit.pipeline.open_stages] == ["New", "Proposal"]
    assert edit.events[0]["payload"]["move_plan"] == {qual: prop}


def test_deals_of_a_deleted_stage_move_per_plan_with_history() -> None:
    clock = Clock()
    pipeline = make_pipeline()
    qual, prop = stage_id(pipeline, "Qualified"), stage_id(pipeline, "Proposal")
    deal, _ = d.move(make_deal(pipeline), pipeline, qual, clock.advance(hours=1))
    edit = d.delete_stage(pipeline, qual, clock.advance(hours=1), 1, prop)
    moved, events = d.move(deal, edit.pipeline, edit.move_plan[deal.stage_id], clock.now())
    assert moved.stage_id == prop
    assert events[0]["payload"]["from_stage_id"] == qual
    assert events[0]["payload"]["time_in_stage_s"] == 3600


def test_delete_stage_without_deals_needs_no_target() -> None:
    pipeline = make_pipeline()
    edit = d.delete_stage(pipeline, stage_id(pipeline, "New"), T0)
    assert edit.move_plan == {}
    assert [s.name for s in edit.pipeline.open_stages] == ["Qualified", "Proposal"]


def test_delete_stage_refuses_target_that_is_deleted_closed_or_foreign() -> None:
    pipeline = make_pipeline()
    qual = stage_id(pipeline, "Qualified")
    for target in (qual, pipeline.won_stage.id, "elsewhere"):
        with pytest.raises(d.ValidationFailed) as info:
            d.delete_stage(pipeline, qual, T0, deal_count=1, target_stage_id=target)
        assert info.value.errors == {f"stage_moves.{qual}": "must name an open stage that remains"}


def test_delete_terminal_last_or_unknown_stage_is_refused() -> None:
    pipeline = make_pipeline()
    with pytest.raises(d.ValidationFailed) as info:
        d.delete_stage(pipeline, pipeline.won_stage.id, T0)
    assert info.value.errors == {"stage_id": "the won stage cannot be deleted"}
    with pytest.raises(d.NotFound) as missing:
        d.delete_stage(pipeline, "nope", T0)
    assert missing.value.status == 404
    single, _ = d.create_pipeline(
        TENANT, {"name": "P", "stages": [{"name": "A", "probability": 1}]}, ids(), T0
    )
    with pytest.raises(d.ValidationFailed) as last:
        d.delete_stage(single, single.first_open_stage.id, T0)
    assert last.value.errors == {"stages": "a pipeline needs at least one open stage"}


def test_pipeline_doc_round_trip_and_naive_datetimes_are_utc() -> None:
    pipeline = make_pipeline(default=True)
    doc = pipeline.to_doc()
    assert doc["_id"] == pipeline.id and "id" not in doc
    assert d.Pipeline.from_doc(doc) == pipeline
    doc["created_at"] = T0.replace(tzinfo=None)
    assert d.Pipeline.from_doc(doc).created_at == T0
    public = pipeline.to_public()
    assert public["id"] == pipeline.id
    assert public["created_at"] == "2026-03-01T09:00:00+00:00"
    json.dumps(public)


# ---------------------------------------------------------------------------------------- deals


def test_create_deal_defaults_to_first_open_stage_with_its_probability() -> None:
    pipeline = make_pipeline()
    source = {"channel_id": "ch1", "kind": "form", "utm_source": "yandex", "name": "Иван"}
    deal, events = d.create_deal(
        TENANT,
        {
            "title": "Сайт под ключ",
            "contact_id": "c1",
            "pipeline_id": pipeline.id,
            "amount": 1999.99,
            "currency": "rub",
            "owner_id": "u1",
            "expected_close": "2026-04-30",
        },
        pipeline,
        ids("deal"),
        T0,
        source=source,
    )
    assert deal.id == "deal1"
    assert deal.stage_id == pipeline.first_open_stage.id
    assert deal.status == "open"
    assert deal.probability == 10 and deal.probability_override is None
    assert deal.amount == "1999.99" and deal.currency == "RUB"
    assert deal.expected_close == date(2026, 4, 30)
    assert deal.source == {"channel_id": "ch1", "kind": "form", "utm_source": "yandex"}
    assert deal.stage_history == (d.StageVisit(deal.stage_id, T0, None),)
    assert deal.created_at == deal.updated_at == T0
    assert types(events) == ["deal.created"]
    payload = events[0]["payload"]
    assert payload == {
        "deal_id": "deal1",
        "pipeline_id": pipeline.id,
        "stage_id": deal.stage_id,
        "status": "open",
        "amount": "1999.99",
        "currency": "RUB",
        "probability": 10,
        "owner_id": "u1",
        "contact_id": "c1",
        "company_id": None,
        "expected_close": "2026-04-30",
        "occurred_at": "2026-03-01T09:00:00+00:00",
        "source": {"channel_id": "ch1", "kind": "form", "utm_source": "yandex"},
    }
    assert "Сайт" not in json.dumps(events, ensure_ascii=False)


def test_create_deal_requires_title_and_contact_and_validates_fields() -> None:
    pipeline = make_pipeline()
    with pytest.raises(d.ValidationFailed) as info:
        d.create_deal(
            TENANT,
            {
                "title": "",
                "pipeline_id": "other",
                "stage_id": "nope",
                "amount": "-5",
                "currency": "RUR",
                "probability": 150,
                "expected_close": "30.04.2026",
                "custom": [],
            },
            pipeline,
            ids(),
            T0,
        )
    assert info.value.errors == {
        "title": "must not be empty",
        "contact_id": "is required",
        "pipeline_id": "does not match the pipeline given",
        "stage_id": "is not a stage of this pipeline",
        "amount": "must not be negative",
        "currency": "RUR is not an active ISO 4217 currency code",
        "probability": "must be an integer from 0 to 100",
        "expected_close": "must be a date, YYYY-MM-DD",
        "custom": "must be an object",
    }


def test_create_deal_amount_needs_currency_unless_default_given() -> None:
    pipeline = make_pipeline()
    with pytest.raises(d.ValidationFailed) as info:
        d.create_deal(TENANT, {"title": "T", "contact_id": "c", "amount": 5}, pipeline, ids(), T0)
    assert info.value.errors == {"currency": "is required when an amount is given"}
    deal, _ = d.create_deal(
        TENANT,
        {"title": "T", "contact_id": "c", "amount": 5},
        pipeline,
        ids(),
        T0,
        default_currency="KZT",
    )
    assert (deal.amount, deal.currency) == ("5.00", "KZT")


def test_create_deal_without_amount_as_from_inbox() -> None:
    pipeline = make_pipeline()
    deal, _ = d.create_deal(TENANT, {"title": "Lead", "contact_id": "c"}, pipeline, ids(), T0)
    assert deal.amount is None and deal.currency is None
    assert deal.weighted_amount is None


def test_create_deal_with_explicit_probability_and_stage() -> None:
    pipeline = make_pipeline()
    prop = stage_id(pipeline, "Proposal")
    deal = make_deal(pipeline, stage_id=prop, probability=45)
    assert deal.stage_id == prop
    assert deal.probability == 45 and deal.probability_override == 45


def test_create_deal_straight_into_lost_needs_reason() -> None:
    pipeline = make_pipeline()
    with pytest.raises(d.ValidationFailed) as info:
        make_deal(pipeline, stage_id=pipeline.lost_stage.id)
    assert info.value.errors == {"lost_reason": "a reason is required to lose a deal"}
    deal, events = d.create_deal(
        TENANT,
        {
            "title": "T",
            "contact_id": "c",
            "stage_id": pipeline.lost_stage.id,
            "lost_reason": "Дорого",
        },
        pipeline,
        ids(),
        T0,
    )
    assert deal.status == "lost" and deal.lost_at == T0 and deal.lost_reason == "Дорого"
    assert types(events) == ["deal.created", "deal.lost"]


# ---------------------------------------------------------------------------------------- moves


def test_move_forward_records_history_and_emits_stage_changed() -> None:
    clock = Clock()
    pipeline = make_pipeline()
    deal = make_deal(pipeline, clock.now(), owner_id="u1")
    qual = stage_id(pipeline, "Qualified")
    t1 = clock.advance(hours=2, minutes=30)
    moved, events = d.move(deal, pipeline, qual, t1)
    assert moved.stage_id == qual and moved.status == "open"
    assert moved.probability == 30
    assert moved.updated_at == t1
    assert moved.stage_history == (
        d.StageVisit(deal.stage_id, T0, t1),
        d.StageVisit(qual, t1, None),
    )
    assert types(events) == ["deal.stage_changed"]
    assert events[0]["payload"] == {
        "deal_id": deal.id,
        "pipeline_id": pipeline.id,
        "from_stage_id": deal.stage_id,
        "to_stage_id": qual,
        "from_kind": "open",
        "to_kind": "open",
        "time_in_stage_s": 9000,
        "amount": "1000.00",
        "currency": "RUB",
        "probability": 30,
        "owner_id": "u1",
        "contact_id": "c1",
        "occurred_at": t1.isoformat(),
        "reopened": False,
    }
    # the input is untouched
    assert deal.stage_history == (d.StageVisit(deal.stage_id, T0, None),)


def test_move_backwards_is_allowed() -> None:
    pipeline = make_pipeline()
    deal, _ = d.move(make_deal(pipeline), pipeline, stage_id(pipeline, "Proposal"), T0 + timedelta(1))
    back, events = d.move(deal, pipeline, stage_id(pipeline, "New"), T0 + timedelta(2))
    assert back.stage_id == stage_id(pipeline, "New")
    assert back.probability == 10
    assert len(back.stage_history) == 3
    assert types(events) == ["deal.stage_changed"]


def test_move_to_current_stage_is_a_no_op() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    same, events = d.move(deal, pipeline, deal.stage_id, T0 + timedelta(hours=1))
    assert same is deal
    assert events == []


def test_move_to_another_pipelines_stage_is_refused() -> None:
    pipeline = make_pipeline()
    other, _ = d.create_pipeline(
        TENANT, {"name": "Other", "stages": [{"name": "A", "probability": 1}]}, ids("o"), T0
    )
    deal = make_deal(pipeline)
    for target_pipeline in (pipeline, other):
        with pytest.raises(d.ValidationFailed) as info:
            d.move(deal, target_pipeline, other.first_open_stage.id, T0)
        assert info.value.errors == {"stage_id": "is not a stage of this deal's pipeline"}
        assert info.value.status == 422


def test_win_sets_won_at_probability_100_and_emits_won() -> None:
    clock = Clock()
    pipeline = make_pipeline()
    deal = make_deal(pipeline, source={"utm_source": "x"})
    deal, _ = d.move(deal, pipeline, stage_id(pipeline, "Proposal"), clock.advance(days=1))
    t = clock.advance(days=2)
    won, events = d.move(deal, pipeline, pipeline.won_stage.id, t)
    assert won.status == "won" and won.won_at == t and won.lost_at is None
    assert won.probability == 100
    assert won.weighted_amount == "1000.00"
    assert types(events) == ["deal.stage_changed", "deal.won"]
    assert events[0]["payload"]["to_kind"] == "won"
    assert events[0]["payload"]["time_in_stage_s"] == 2 * 86400
    won_payload = events[1]["payload"]
    assert won_payload["won_at"] == t.isoformat()
    assert won_payload["cycle_time_s"] == 3 * 86400
    assert won_payload["amount"] == "1000.00"


def test_lose_with_reason_records_reason_and_emits_lost() -> None:
    pipeline = make_pipeline()
    t = T0 + timedelta(hours=5)
    lost, events = d.move(
        make_deal(pipeline), pipeline, pipeline.lost_stage.id, t, lost_reason="  Too expensive "
    )
    assert lost.status == "lost" and lost.lost_at == t and lost.won_at is None
    assert lost.lost_reason == "Too expensive"
    assert lost.probability == 0
    assert lost.weighted_amount == "0.00"
    assert types(events) == ["deal.stage_changed", "deal.lost"]
    assert events[1]["payload"]["lost_reason"] == "Too expensive"
    assert events[1]["payload"]["lost_at"] == t.isoformat()


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_lose_without_reason_is_refused(reason: str | None) -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    with pytest.raises(d.ValidationFailed) as info:
        d.move(deal, pipeline, pipeline.lost_stage.id, T0, lost_reason=reason)
    assert set(info.value.errors) == {"lost_reason"}


def test_lose_reason_must_be_on_tenant_list_matched_case_insensitively() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    reasons = ["Дорого", "Выбрали конкурента"]
    with pytest.raises(d.ValidationFailed) as info:
        d.move(
            deal,
            pipeline,
            pipeline.lost_stage.id,
            T0,
            lost_reason="Просто так",
            loss_reasons=reasons,
        )
    assert info.value.errors == {"lost_reason": "must be one of the tenant's loss reasons"}
    lost, _ = d.move(deal, pipeline, pipeline.lost_stage.id, T0, lost_reason="дОРОГО", loss_reasons=reasons)
    assert lost.lost_reason == "Дорого"


def test_reopen_lost_deal_is_allowed_and_recorded() -> None:
    clock = Clock()
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    lost, _ = d.move(deal, pipeline, pipeline.lost_stage.id, clock.advance(days=1), "No budget")
    t = clock.advance(days=10)
    reopened, events = d.move(lost, pipeline, stage_id(pipeline, "Qualified"), t)
    assert reopened.status == "open"
    assert reopened.lost_at is None and reopened.lost_reason is None
    assert reopened.reopened_at == t and reopened.reopen_count == 1
    assert reopened.probability == 30
    assert types(events) == ["deal.stage_changed", "deal.reopened"]
    assert events[0]["payload"]["reopened"] is True
    assert events[0]["payload"]["from_kind"] == "lost"
    assert events[0]["payload"]["time_in_stage_s"] == 10 * 86400
    assert events[1]["payload"]["previous_status"] == "lost"
    assert [v.stage_id for v in reopened.stage_history] == [
        deal.stage_id,
        pipeline.lost_stage.id,
        stage_id(pipeline, "Qualified"),
    ]


def test_won_to_lost_withdraws_the_win() -> None:
    pipeline = make_pipeline()
    won, _ = d.move(make_deal(pipeline), pipeline, pipeline.won_stage.id, T0 + timedelta(1))
    lost, events = d.move(won, pipeline, pipeline.lost_stage.id, T0 + timedelta(2), "Refund")
    assert lost.won_at is None and lost.status == "lost"
    assert lost.reopen_count == 1
    assert types(events) == ["deal.stage_changed", "deal.reopened", "deal.lost"]


def test_explicit_probability_survives_moves_but_not_the_outcome() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline, probability=42)
    moved, _ = d.move(deal, pipeline, stage_id(pipeline, "Proposal"), T0 + timedelta(1))
    assert moved.probability == 42
    won, _ = d.move(moved, pipeline, pipeline.won_stage.id, T0 + timedelta(2))
    assert won.probability == 100
    back, _ = d.move(won, pipeline, stage_id(pipeline, "New"), T0 + timedelta(3))
    assert back.probability == 42


def test_stage_history_timestamps_follow_the_injected_clock() -> None:
    clock = Clock()
    pipeline = make_pipeline()
    deal = make_deal(pipeline, clock.now())
    path = ["Qualified", "Proposal", "Qualified"]
    times = []
    for name in path:
        times.append(clock.advance(minutes=17))
        deal, _ = d.move(deal, pipeline, stage_id(pipeline, name), clock.now())
    times.append(clock.advance(hours=1))
    deal, _ = d.move(deal, pipeline, pipeline.won_stage.id, clock.now())
    history = deal.stage_history
    assert [v.entered_at for v in history] == [T0, *times]
    assert [v.left_at for v in history] == [*times, None]
    for previous, current in itertools.pairwise(history):
        assert previous.left_at == current.entered_at


def test_time_in_stage_never_negative_under_clock_skew() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline, T0)
    _, events = d.move(deal, pipeline, stage_id(pipeline, "Qualified"), T0 - timedelta(seconds=5))
    assert events[0]["payload"]["time_in_stage_s"] == 0


# ---------------------------------------------------------------------------------------- patch


def test_update_deal_changes_fields_and_emits_updated_with_names_only() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    t = T0 + timedelta(hours=1)
    updated, events = d.update_deal(
        deal,
        pipeline,
        {
            "title": "Новое имя",
            "amount": "2500,5",
            "owner_id": "u2",
            "probability": 70,
            "expected_close": None,
        },
        t,
    )
    assert updated.title == "Новое имя"
    assert updated.amount == "2500.50"
    assert updated.owner_id == "u2"
    assert updated.probability == 70 and updated.probability_override == 70
    assert updated.updated_at == t
    assert types(events) == ["deal.updated"]
    assert events[0]["payload"]["changed"] == ["amount", "owner_id", "probability", "title"]
    assert "Новое" not in json.dumps(events, ensure_ascii=False)


def test_update_probability_null_follows_stage_again() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline, probability=55)
    updated, _ = d.update_deal(deal, pipeline, {"probability": None}, T0)
    assert updated.probability == 10 and updated.probability_override is None


def test_update_with_stage_id_moves_the_deal() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    updated, events = d.update_deal(
        deal,
        pipeline,
        {"stage_id": pipeline.lost_stage.id, "lost_reason": "Silent"},
        T0 + timedelta(1),
    )
    assert updated.status == "lost"
    assert types(events) == ["deal.stage_changed", "deal.lost"]


def test_update_deal_refuses_bad_and_unknown_fields() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    with pytest.raises(d.ValidationFailed) as info:
        d.update_deal(
            deal,
            pipeline,
            {
                "title": None,
                "amount": "1.999",
                "status": "won",
                "pipeline_id": "p2",
                "stage_id": "zz",
            },
            T0,
        )
    assert info.value.errors == {
        "status": "is not a field that can be changed",
        "pipeline_id": "a deal cannot change pipeline; create it in the other one",
        "title": "is required",
        "amount": "may have at most 2 decimal places",
        "stage_id": "is not a stage of this deal's pipeline",
    }


def test_update_without_changes_emits_nothing() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    same, events = d.update_deal(deal, pipeline, {"amount": 1000, "currency": "RUB"}, T0 + timedelta(1))
    assert events == [] and same == deal


def test_sync_probability_after_stage_probability_edit() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    explicit = make_deal(pipeline, probability=33)
    new = pipeline.first_open_stage.id
    edit = d.edit_pipeline(
        pipeline,
        {
            "stages": [
                {"id": new, "probability": 15},
                *({"id": s.id} for s in pipeline.open_stages[1:]),
            ]
        },
        ids(),
        T0,
    )
    synced, events = d.sync_probability(deal, edit.pipeline, T0)
    assert synced.probability == 15 and types(events) == ["deal.updated"]
    same, none = d.sync_probability(explicit, edit.pipeline, T0)
    assert same.probability == 33 and none == []


# --------------------------------------------------------------------- next action, merge, erase


def test_pick_next_action_takes_earliest_open_task() -> None:
    tasks = [
        {
            "id": "t3",
            "title": "Send offer",
            "due_at": "2026-03-05T10:00:00+03:00",
            "status": "open",
        },
        {"id": "t1", "title": "Call", "due_at": "2026-03-05T06:30:00Z", "status": "overdue"},
        {"id": "t0", "title": "Done already", "due_at": "2026-03-01T00:00:00Z", "status": "done"},
    ]
    action = d.pick_next_action(tasks)
    assert action == d.NextAction("t1", "Call", datetime(2026, 3, 5, 6, 30, tzinfo=UTC))
    assert d.pick_next_action([]) is None
    pipeline = make_pipeline()
    deal, events = d.set_next_action(make_deal(pipeline), action, T0 + timedelta(1))
    assert deal.next_action == action and events == []
    assert deal.to_public()["next_action"] == {
        "task_id": "t1",
        "title": "Call",
        "due_at": "2026-03-05T06:30:00+00:00",
    }


def test_repoint_contact_moves_only_deals_of_the_merged_contact() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline, contact_id="old")
    t = T0 + timedelta(1)
    moved, events = d.repoint_contact(deal, "old", "survivor", t)
    assert moved.contact_id == "survivor" and moved.updated_at == t
    assert events[0]["event_type"] == "deal.updated"
    assert events[0]["payload"]["previous_contact_id"] == "old"
    again, none = d.repoint_contact(moved, "old", "survivor", t)
    assert again is moved and none == []


def test_erase_personal_data_replaces_title_and_clears_custom_keeping_counts() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline, title="Иванов И.И. — квартира", custom={"passport": "4500 123456"})
    deal, _ = d.set_next_action(deal, d.NextAction("t1", "Позвонить Иванову", T0), T0)
    erased, events = d.erase_personal_data(deal, T0 + timedelta(1))
    assert erased.title == "Erased"
    assert erased.custom == {}
    assert erased.next_action is not None and erased.next_action.title == ""
    assert erased.contact_id == deal.contact_id
    assert erased.amount == deal.amount and erased.stage_history == deal.stage_history
    assert erased.erased is True
    assert types(events) == ["deal.erased"]
    assert "Иванов" not in json.dumps(erased.to_public(), ensure_ascii=False)
    again, none = d.erase_personal_data(erased, T0 + timedelta(2))
    assert again is erased and none == []


# -------------------------------------------------------------------------------- serialisation


def test_deal_doc_round_trip_is_lossless_and_public_is_json() -> None:
    pipeline = make_pipeline()
    deal = make_deal(
        pipeline,
        owner_id="u1",
        company_id="co1",
        expected_close="2026-05-01",
        custom={"budget_source": "grant"},
        source={"kind": "call"},
    )
    deal, _ = d.move(deal, pipeline, pipeline.lost_stage.id, T0 + timedelta(hours=3), "Late")
    deal, _ = d.move(deal, pipeline, stage_id(pipeline, "Proposal"), T0 + timedelta(hours=4))
    doc = deal.to_doc()
    assert doc["_id"] == deal.id
    assert doc["expected_close"] == "2026-05-01"
    assert isinstance(doc["created_at"], datetime)
    assert d.Deal.from_doc(doc) == deal
    # pymongo without tz_aware returns naive UTC datetimes
    naive = {**doc, "created_at": T0.replace(tzinfo=None)}
    naive["stage_history"] = [
        {**v, "entered_at": v["entered_at"].replace(tzinfo=None)} for v in doc["stage_history"]
    ]
    assert d.Deal.from_doc(naive) == deal
    public = deal.to_public()
    json.dumps(public)
    assert public["id"] == deal.id
    assert public["stage_history"][0] == {
        "stage_id": pipeline.first_open_stage.id,
        "entered_at": "2026-03-01T09:00:00+00:00",
        "left_at": "2026-03-01T12:00:00+00:00",
    }
    assert public["stage_history"][-1]["left_at"] is None
    assert public["weighted_amount"] == "600.00"


def test_events_are_json_serialisable() -> None:
    pipeline = make_pipeline()
    _, created = d.create_deal(
        TENANT,
        {"title": "T", "contact_id": "c", "amount": 1, "currency": "EUR"},
        pipeline,
        ids(),
        T0,
    )
    deal = make_deal(pipeline)
    _, moved = d.move(deal, pipeline, pipeline.won_stage.id, T0 + timedelta(1))
    json.dumps([*created, *moved])


# --------------------------------------------------------------------------------- loss reasons


def test_add_loss_reason_refuses_empty_and_duplicates() -> None:
    reasons = d.add_loss_reason([], "  Дорого ")
    assert reasons == ["Дорого"]
    with pytest.raises(d.Conflict) as dup:
        d.add_loss_reason(reasons, "дорого")
    assert dup.value.status == 409
    with pytest.raises(d.ValidationFailed) as empty:
        d.add_loss_reason(reasons, " ")
    assert empty.value.errors == {"name": "must not be empty"}


# ---------------------------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("1999.99", "1999.99"),
        (1999.99, "1999.99"),
        (100, "100.00"),
        ("100", "100.00"),
        ("0", "0.00"),
        (0.1, "0.10"),
        ("1999,99", "1999.99"),
        (" 42.5 ", "42.50"),
        ("1e3", "1000.00"),
        (Decimal("7.10"), "7.10"),
        ("12.300", "12.30"),
        (123456789012.34, "123456789012.34"),
    ],
)
def test_amount_canonicalisation(raw: object, canonical: str) -> None:
    assert canonical_amount(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("-1", "must not be negative"),
        (-0.01, "must not be negative"),
        ("NaN", "must be a finite number"),
        (float("nan"), "must be a finite number"),
        ("Infinity", "must be a finite number"),
        (float("inf"), "must be a finite number"),
        ("1.999", "may have at most 2 decimal places"),
        (0.125, "may have at most 2 decimal places"),
        ("abc", 'must be a decimal number, e.g. "1999.99"'),
        ("1 000", 'must be a decimal number, e.g. "1999.99"'),
        ("1,000.00", 'must be a decimal number, e.g. "1999.99"'),
        ("", 'must be a decimal number, e.g. "1999.99"'),
        (True, 'must be a decimal number, e.g. "1999.99"'),
        ([1], 'must be a decimal number, e.g. "1999.99"'),
        ("1e20", "is too large"),
    ],
)
def test_amount_rejection(raw: object, message: str) -> None:
    with pytest.raises(MoneyError) as info:
        parse_amount(raw)
    assert str(info.value) == message


def test_amount_never_uses_float_arithmetic() -> None:
    # 0.1 + 0.2 in floats is 0.30000000000000004; amounts stay exact decimals
    assert parse_amount(0.1) + parse_amount(0.2) == Decimal("0.30")
    assert isinstance(parse_amount("1.10"), Decimal)


@pytest.mark.parametrize(("raw", "code"), [("rub", "RUB"), (" USD ", "USD"), ("KZT", "KZT"), ("BYN", "BYN")])
def test_currency_normalised(raw: str, code: str) -> None:
    assert normalize_currency(raw) == code


@pytest.mark.parametrize("raw", ["RUR", "US", "USDT", "₽", "12A", "", None, 643])
def test_currency_rejected(raw: object) -> None:
    with pytest.raises(MoneyError):
        normalize_currency(raw)


@pytest.mark.parametrize(
    ("amount", "probability", "weighted"),
    [
        ("1000.00", 30, "300.00"),
        ("1999.99", 15, "300.00"),
        ("0.05", 50, "0.03"),
        ("10.00", 0, "0.00"),
        (None, 50, None),
    ],
)
def test_weighted_amount(amount: str | None, probability: int, weighted: str | None) -> None:
    assert weighted_amount(amount, probability) == weighted


# ---------------------------------------------------------------------------------------- import


def test_import_builds_consistent_history_from_past_dates() -> None:
    pipeline = make_pipeline()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    deal, events = d.import_deal(
        TENANT,
        {
            "title": "Old deal",
            "contact_id": "c1",
            "amount": "5000",
            "currency": "USD",
            "created_at": "2025-12-31T12:00:00Z",
            "stage_history": [
                {"stage": "new", "entered_at": "2026-01-01T10:00:00+03:00"},
                {"stage_id": stage_id(pipeline, "Qualified"), "entered_at": "2026-01-05T09:00:00Z"},
                {"stage_id": stage_id(pipeline, "Qualified"), "entered_at": "2026-01-06T09:00:00Z"},
                {"stage": "Won", "entered_at": "2026-02-01T00:00:00"},
            ],
        },
        pipeline,
        ids("imp"),
        now,
    )
    jan1 = datetime(2026, 1, 1, 7, 0, tzinfo=UTC)
    jan5 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    feb1 = datetime(2026, 2, 1, tzinfo=UTC)
    assert deal.stage_history == (
        d.StageVisit(stage_id(pipeline, "New"), jan1, jan5),
        d.StageVisit(stage_id(pipeline, "Qualified"), jan5, feb1),
        d.StageVisit(pipeline.won_stage.id, feb1, None),
    )
    assert deal.status == "won" and deal.won_at == feb1
    assert deal.stage_id == pipeline.won_stage.id
    assert deal.probability == 100
    assert deal.created_at == datetime(2025, 12, 31, 12, tzinfo=UTC)
    assert deal.updated_at == now
    assert deal.imported is True
    assert types(events) == ["deal.created", "deal.stage_changed", "deal.stage_changed", "deal.won"]
    assert all(e["payload"]["imported"] is True for e in events)
    assert events[0]["payload"]["occurred_at"] == "2025-12-31T12:00:00+00:00"
    assert events[2]["payload"]["occurred_at"] == feb1.isoformat()
    assert events[2]["payload"]["time_in_stage_s"] == (feb1 - jan5).total_seconds()


def test_import_lost_deal_needs_reason_and_reopen_is_replayed() -> None:
    pipeline = make_pipeline()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    history = [
        {"stage": "New", "entered_at": "2026-01-01T00:00:00Z"},
        {"stage": "Lost", "entered_at": "2026-01-02T00:00:00Z", "lost_reason": "Ghosted"},
        {"stage": "Proposal", "entered_at": "2026-01-10T00:00:00Z"},
        {"stage": "Lost", "entered_at": "2026-01-20T00:00:00Z"},
    ]
    with pytest.raises(d.ValidationFailed) as info:
        d.import_deal(
            TENANT,
            {"title": "T", "contact_id": "c", "stage_history": history},
            pipeline,
            ids(),
            now,
        )
    assert info.value.errors == {"stage_history.3.lost_reason": "a reason is required to lose a deal"}
    deal, events = d.import_deal(
        TENANT,
        {"title": "T", "contact_id": "c", "stage_history": history, "lost_reason": "Budget"},
        pipeline,
        ids(),
        now,
    )
    assert deal.status == "lost" and deal.lost_reason == "Budget"
    assert deal.lost_at == datetime(2026, 1, 20, tzinfo=UTC)
    assert deal.reopen_count == 1 and deal.reopened_at == datetime(2026, 1, 10, tzinfo=UTC)
    assert types(events) == [
        "deal.created",
        "deal.stage_changed",
        "deal.lost",
        "deal.stage_changed",
        "deal.reopened",
        "deal.stage_changed",
        "deal.lost",
    ]
    assert events[2]["payload"]["lost_reason"] == "Ghosted"


def test_import_validation_errors() -> None:
    pipeline = make_pipeline()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with pytest.raises(d.ValidationFailed) as info:
        d.import_deal(
            TENANT,
            {
                "title": "T",
                "contact_id": "c",
                "created_at": "2026-02-01T00:00:00Z",
                "stage_history": [
                    {"stage": "New", "entered_at": "2026-01-05T00:00:00Z"},
                    {"stage": "Nowhere", "entered_at": "2026-01-06T00:00:00Z"},
                    {
                        "stage_id": stage_id(pipeline, "Proposal"),
                        "entered_at": "2026-01-04T00:00:00Z",
                    },
                    {"entered_at": "2026-01-07T00:00:00Z"},
                    {"stage": "Won", "entered_at": "yesterday"},
                    {"stage": "Won", "entered_at": "2027-01-01T00:00:00Z"},
                ],
            },
            pipeline,
            ids(),
            now,
        )
    assert info.value.errors == {
        "stage_history.1.stage": "no stage of this pipeline has this name",
        "stage_history.2.entered_at": "is earlier than the previous entry",
        "stage_history.3.stage_id": "is required (or the stage's name as stage)",
        "stage_history.4.entered_at": "must be an ISO 8601 timestamp",
        "stage_history.5.entered_at": "lies in the future",
        "created_at": "is later than the first stage entry",
    }
    with pytest.raises(d.ValidationFailed) as empty:
        d.import_deal(TENANT, {"title": "T", "contact_id": "c", "stage_history": []}, pipeline, ids(), now)
    assert set(empty.value.errors) == {"stage_history"}


def test_domain_errors_carry_http_status_and_code() -> None:
    assert issubclass(d.ValidationFailed, d.DomainError)
    assert (d.ValidationFailed.status, d.Conflict.status, d.NotFound.status) == (422, 409, 404)
    err = d.ValidationFailed({"amount": "bad"})
    assert err.detail == "amount: bad" and err.code == "validation_failed"


def test_patch_lost_reason_corrects_a_lost_deal_only() -> None:
    pipeline = make_pipeline()
    deal = make_deal(pipeline)
    with pytest.raises(d.ValidationFailed) as info:
        d.update_deal(deal, pipeline, {"lost_reason": "Late"}, T0)
    assert set(info.value.errors) == {"lost_reason"}
    lost, _ = d.move(deal, pipeline, pipeline.lost_stage.id, T0, "late", loss_reasons=["Late", "Price"])
    fixed, events = d.update_deal(
        lost, pipeline, {"lost_reason": "price"}, T0 + timedelta(1), loss_reasons=["Late", "Price"]
    )
    assert fixed.lost_reason == "Price"
    assert events[0]["payload"]["changed"] == ["lost_reason"]


def test_select_pipeline_by_id_or_default() -> None:
    sales = make_pipeline()
    other, _ = d.create_pipeline(
        TENANT,
        {"name": "Партнёры", "default": True, "stages": [{"name": "A", "probability": 1}]},
        ids("o"),
        T0,
    )
    assert d.select_pipeline([sales, other], sales.id) is sales
    assert d.select_pipeline([sales, other], None) is other
    assert d.select_pipeline([sales], None) is None
    with pytest.raises(d.ValidationFailed) as info:
        d.select_pipeline([sales], "missing")
    assert info.value.errors == {"pipeline_id": "no such pipeline"}


def test_demote_other_defaults_clears_the_flag_elsewhere() -> None:
    old = make_pipeline(default=True)
    new, _ = d.create_pipeline(
        TENANT,
        {"name": "New", "default": True, "stages": [{"name": "A", "probability": 1}]},
        ids("n"),
        T0,
    )
    changed = d.demote_other_defaults([old, new], new.id, T0 + timedelta(1))
    assert [(p.id, p.default) for p, _ in changed] == [(old.id, False)]
    assert changed[0][1][0]["event_type"] == "pipeline.updated"
