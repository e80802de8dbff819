from __future__ import annotations

import pytest

from tests.support.hub import Api

pytestmark = pytest.mark.e2e


def test_several_users_without_email_and_duplicate_email_refused(admin: Api) -> None:
    for name in ("Оператор 1", "Оператор 2"):
        r = admin.post("/api/v1/users", json={"name": name, "role": "manager"})
        assert r.status_code == 201, r.text
        assert r.json()["api_key"].startswith("crm_")
    assert (
        admin.post("/api/v1/users", json={"name": "A", "email": "a@x.ru", "role": "viewer"}).status_code
        == 201
    )
    r = admin.post("/api/v1/users", json={"name": "B", "email": "A@X.RU", "role": "viewer"})
    assert r.status_code == 422 and "email" in r.json()["errors"]


def test_me_has_a_calendar_url_with_its_token(admin: Api) -> None:
    me = admin.get("/api/v1/users/me").json()
    assert me["role"] == "admin"
    assert "/api/v1/calendar.ics?token=" in me["calendar_url"]
