from __future__ import annotations

import httpx
import pytest

from tests.support.hub import Api, HubProcess

pytestmark = pytest.mark.e2e


def test_health_and_ready(hub: HubProcess) -> None:
    assert httpx.get(hub.url + "/health").json() == {"status": "ok"}
    r = httpx.get(hub.url + "/ready")
    assert r.status_code == 200 and r.json()["missing"] == []


def test_no_key_is_401_problem(hub: HubProcess) -> None:
    r = httpx.get(hub.url + "/api/v1/contacts")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 401


def test_tenant_creation_needs_root_token(root: Api, admin: Api) -> None:
    assert admin.post("/api/v1/tenants", json={"name": "x"}).status_code == 403
    r = root.post("/api/v1/tenants", json={})
    assert r.status_code == 422 and "name" in r.json()["errors"]
