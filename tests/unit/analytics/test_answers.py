"""Real answer times in the response-time report (``replies``, from ``message.sent``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.analytics.answers import replies

pytestmark = pytest.mark.unit
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def answer(who: str | None, waited_min: float, at_min: float) -> dict[str, object]:
    return {
        "assignee_id": who,
        "waited_since": T0 + timedelta(minutes=at_min - waited_min),
        "answered_at": T0 + timedelta(minutes=at_min),
    }


def test_replies_per_assignee_measure_the_wait_until_the_answer_went_out() -> None:
    rows = replies(
        [answer("u1", 5, 10), answer("u1", 25, 60), answer("u2", 1, 5)], None, None, sla_minutes=15
    )
    assert rows == [
        {"assignee_id": "u1", "answered": 2, "avg_minutes": 15.0, "median_minutes": 15.0, "within_sla": 0.5},
        {"assignee_id": "u2", "answered": 1, "avg_minutes": 1.0, "median_minutes": 1.0, "within_sla": 1.0},
    ]


def test_the_period_is_that_of_the_answer() -> None:
    rows = replies([answer("u1", 5, 10), answer("u1", 5, 120)], T0, T0 + timedelta(hours=1), sla_minutes=15)
    assert [r["answered"] for r in rows] == [1]
