"""Unit tests of the service-side rules around the domain: errors crossing RPC, index choice,
source attribution, event ordering keys."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from services.deals import domain as d
from services.deals.service import _micros
from services.deals.store import IX_CONTACT, IX_OWNER, IX_PIPELINE, IX_PIPELINE_STAGE, IX_TENANT
from services.deals.store import listing_hint as _hint
from shared.errors import AppError

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def pipeline() -> d.Pipeline:
    counter = itertools.count(1)
    p, _ = d.create_pipeline("t1", {"name": "S", "stages": [{"name": "A", "probability": 10}]}, lambda: f"s{next(counter)}", T0)  # fmt: skip
    return p


def deal(**extra: object) -> d.Deal:
    created, _ = d.create_deal(
        "t1", {"title": "X", "contact_id": "c1", **extra}, pipeline(), lambda: "d1", T0
    )
    return created


def test_domain_errors_are_app_errors_and_keep_status_code_and_fields() -> None:
    err = d.ValidationFailed({"lost_reason": "a reason is required to lose a deal"})
    assert isinstance(err, AppError)
    wire = err.to_wire()
    assert wire["status"] == 422 and wire["code"] == "validation_failed"
    assert wire["errors"] == {"lost_reason": "a reason is required to lose a deal"}
    conflict = d.Conflict("busy", errors={"stages.s1": "holds 2 deal(s)"}, code="stage_has_deals")
    assert conflict.to_problem()["status"] == 409 and conflict.to_problem()["code"] == "stage_has_deals"
    assert AppError.from_wire(conflict.to_wire()).status == 409


def test_domain_not_found_is_404() -> None:
    assert d.NotFound("No such stage.", code="stage_not_found").to_wire()["status"] == 404


@pytest.mark.parametrize(
    ("flt", "index"),
    [
        ({"tenant_id": "t", "pipeline_id": "p", "stage_id": "s"}, IX_PIPELINE_STAGE),
        (
            {"tenant_id": "t", "pipeline_id": "p", "stage_id": "s", "owner_id": {"$in": ["u", None]}},
            IX_PIPELINE_STAGE,
        ),
        ({"tenant_id": "t", "pipeline_id": "p"}, IX_PIPELINE),
        ({"tenant_id": "t", "contact_id": "c", "owner_id": "u"}, IX_CONTACT),
        ({"tenant_id": "t", "owner_id": "u"}, IX_OWNER),
        ({"tenant_id": "t", "owner_id": {"$in": ["u", None]}}, IX_TENANT),
        ({"tenant_id": "t"}, IX_TENANT),
    ],
)
def test_each_listing_goes_to_the_index_whose_prefix_it_filters(
    flt: dict[str, object], index: object
) -> None:
    assert _hint(flt) == index
    # every hinted index starts with the tenant and ends with _id, so the sort needs no scan
    assert index[0][0] == "tenant_id" and index[-1] == ("_id", -1)


def test_event_times_order_to_the_microsecond() -> None:
    assert _micros(T0 + timedelta(microseconds=1)) - _micros(T0) == 1
    assert _micros(T0.replace(tzinfo=None)) == _micros(T0)


def test_attribute_source_fills_a_missing_source_once_with_an_event() -> None:
    blank = deal()
    assert blank.source is None
    later = T0 + timedelta(minutes=5)
    filled, events = d.attribute_source(blank, {"kind": "form", "utm_source": "yandex", "name": "PII"}, later)
    assert filled.source == {"kind": "form", "utm_source": "yandex"}  # attribution keys only
    assert filled.updated_at == later
    assert [e["event_type"] for e in events] == ["deal.updated"]
    assert events[0]["payload"]["changed"] == ["source"]
    assert events[0]["payload"]["source"] == {"kind": "form", "utm_source": "yandex"}
    again, more = d.attribute_source(filled, {"kind": "call"}, later)
    assert again is filled and more == []


def test_attribute_source_ignores_an_empty_source() -> None:
    blank = deal()
    assert d.attribute_source(blank, {}, T0) == (blank, [])
    assert d.attribute_source(blank, None, T0) == (blank, [])


def test_every_domain_event_fits_its_registered_payload_model_unchanged() -> None:
    from shared.events import PAYLOADS, make_event

    counter = itertools.count(1)
    p, events = d.create_pipeline(
        "t1", {"name": "S", "stages": [{"name": "A", "probability": 10}, {"name": "B", "probability": 50}]},
        lambda: f"s{next(counter)}", T0,
    )  # fmt: skip
    a, b = (s.id for s in p.open_stages)
    deal, more = d.create_deal("t1", {"title": "X", "contact_id": "c1", "amount": 5, "currency": "RUB"}, p, lambda: "d1", T0, source={"kind": "form"})  # fmt: skip
    events += more
    at = T0
    for stage_id, reason in ((b, None), (p.lost_stage.id, "Дорого"), (a, None), (p.won_stage.id, None)):
        at += timedelta(hours=1)
        deal, more = d.move(deal, p, stage_id, at, reason)
        events += more
    deal, more = d.update_deal(deal, p, {"amount": 7}, at)
    events += more
    deal, more = d.repoint_contact(deal, "c1", "c2", at)
    events += more
    deal, more = d.erase_personal_data(deal, at)
    events += more
    events += d.edit_pipeline(p, {"name": "S2"}, lambda: "x", at).events
    types = {e["event_type"] for e in events}
    assert types >= {"deal.created", "deal.stage_changed", "deal.lost", "deal.reopened", "deal.won", "deal.updated", "deal.erased", "pipeline.created", "pipeline.updated"}  # fmt: skip
    for event in events:
        assert (event["event_type"], 1) in PAYLOADS
        env = make_event(event["event_type"], tenant_id="t1", producer="deals", payload=event["payload"])
        assert {k: env.payload[k] for k in event["payload"]} == event["payload"]
