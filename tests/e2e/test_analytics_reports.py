"""Reports through the gateway, built from the events of real deals and real captured leads."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from tests.support.hub import Api, eventually

pytestmark = pytest.mark.e2e


def lead(admin: Api, utm_source: str, phone: str) -> str:
    channel = admin.post("/api/v1/channels", json={"kind": "form", "name": "site", "intake": "auto"}).json()
    r = httpx.post(channel["webhook_url"], data={"name": "Лид", "phone": phone, "utm_source": utm_source})
    assert r.status_code == 200
    return eventually(lambda: admin.get("/api/v1/contacts", params={"phone": phone}).json()["items"])[0]["id"]


def test_funnel_sources_forecast_and_csv_follow_the_deals(admin: Api) -> None:
    pipe = admin.post(
        "/api/v1/pipelines",
        json={
            "name": "Продажи",
            "stages": [{"name": "Новый", "probability": 10}, {"name": "КП", "probability": 50}],
        },
    ).json()
    new, offer, won, lost = (s["id"] for s in pipe["stages"])
    c1 = lead(admin, "yandex", "+7 916 100 00 01")
    c2 = lead(admin, "yandex", "+7 916 100 00 02")
    c3 = lead(admin, "vk", "+7 916 100 00 03")

    def deal(contact: str, amount: str, close: str | None = None) -> str:
        body = {
            "title": "Сделка",
            "contact_id": contact,
            "pipeline_id": pipe["id"],
            "amount": amount,
            "currency": "RUB",
            **({"expected_close": close} if close else {}),
        }
        r = admin.post("/api/v1/deals", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    d1, d2, d3 = deal(c1, "1000"), deal(c2, "500"), deal(c3, "2000", "2026-12-20")
    for d, stage, extra in (
        (d1, offer, {}),
        (d1, won, {}),
        (d2, lost, {"lost_reason": "Дорого"}),
        (d3, offer, {}),
    ):
        r = admin.post(f"/api/v1/deals/{d}/move", json={"stage_id": stage, **extra})
        assert r.status_code == 200, r.text
    admin.post("/api/v1/marketing-costs", json={"source": "yandex", "period": "2026-11", "amount": "250"})

    def funnel() -> dict | None:
        out = admin.get("/api/v1/reports/funnel", params={"pipeline_id": pipe["id"]}).json()
        return out if out["won"] == 1 and out["lost"] == 1 and out["stages"][1]["entered"] == 2 else None

    out = eventually(funnel, timeout=20)
    rows = {r["stage_id"]: r for r in out["stages"]}
    assert rows[new]["entered"] == 3 and rows[new]["moved_on"] == 2
    assert rows[offer]["moved_on"] == 1 and rows[offer]["conversion"] == 0.5
    assert out["win_rate"] == 0.5

    sources = {i["source"]: i for i in admin.get("/api/v1/reports/sources").json()["items"]}
    assert sources["yandex"]["leads"] == 2 and sources["yandex"]["won"] == 1
    assert sources["yandex"]["revenue"] == "1000.00" and sources["yandex"]["conversion"] == 0.5
    assert sources["vk"]["deals"] == 1 and sources["vk"]["won"] == 0

    forecast = admin.get("/api/v1/reports/forecast").json()
    assert {"period": "2026-12", "deals": 1, "amount": "2000.00", "weighted": "1000.00"} in forecast["items"]

    r = admin.get("/api/v1/reports/funnel", params={"pipeline_id": pipe["id"], "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["stage_id"] for row in table] == [new, offer]
    assert set(table[0]) == {"stage_id", "name", "entered", "moved_on", "conversion"}


def test_unknown_report_is_a_problem_and_other_tenants_see_nothing(admin: Api, root: Api) -> None:
    r = admin.get("/api/v1/reports/nonsense")
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    lead(admin, "google", "+7 916 100 00 09")
    other = root.as_key(root.post("/api/v1/tenants", json={"name": "Other"}).json()["api_key"])
    assert other.get("/api/v1/reports/sources").json()["items"] == []
