"""Every resource answers ``GET /api/v1/<plural>/{id}`` (API.md conventions), and only within its tenant."""

from __future__ import annotations

import pytest

from tests.support.hub import Api

pytestmark = pytest.mark.e2e


def test_reference_records_are_readable_by_id_and_404_elsewhere(admin: Api, root: Api) -> None:
    field = admin.post(
        "/api/v1/custom-fields", json={"entity": "contact", "key": "inn", "label": "ИНН", "type": "string"}
    ).json()
    assert admin.get(f"/api/v1/custom-fields/{field['id']}").json()["key"] == "inn"
    assert admin.post("/api/v1/loss-reasons", json={"name": "Дорого"}).status_code == 201
    assert admin.get("/api/v1/loss-reasons/Дорого").json()["name"] == "Дорого"
    plan = admin.post("/api/v1/plans", json={"period": "2026-12", "amount": "100000"}).json()
    assert admin.get(f"/api/v1/plans/{plan['id']}").json()["amount"] == "100000.00"
    cost = admin.post(
        "/api/v1/marketing-costs", json={"source": "vk", "period": "2026-12", "amount": "5000"}
    ).json()
    assert admin.get(f"/api/v1/marketing-costs/{cost['id']}").json()["source"] == "vk"
    made = root.post("/api/v1/tenants", json={"name": "Other"}).json()
    other = root.as_key(made["api_key"])
    assert root.get(f"/api/v1/tenants/{made['tenant_id']}").json()["name"] == "Other"
    assert other.get(f"/api/v1/tenants/{made['tenant_id']}").status_code == 200
    for path in (
        f"/api/v1/custom-fields/{field['id']}",
        "/api/v1/loss-reasons/Дорого",
        f"/api/v1/plans/{plan['id']}",
        f"/api/v1/marketing-costs/{cost['id']}",
    ):
        r = other.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/problem+json")
    assert admin.get(f"/api/v1/tenants/{made['tenant_id']}").status_code == 404
