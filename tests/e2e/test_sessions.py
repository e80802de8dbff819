"""Console sign-in over HTTP: passwords, cookie sessions, CSRF, sign-out, failure limits."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.hub import Api

pytestmark = pytest.mark.e2e

PASSWORD = "верный пароль 123"


def _email() -> str:
    return f"op-{uuid.uuid4().hex[:8]}@example.ru"


def _browser(api: Api) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, timeout=15.0)


def _sign_in(client: httpx.Client, email: str, password: str) -> httpx.Response:
    return client.post("/api/v1/sessions", json={"email": email, "password": password})


def test_a_user_created_with_a_password_signs_in_with_a_cookie_and_csrf(admin: Api) -> None:
    email = _email()
    r = admin.post(
        "/api/v1/users", json={"name": "Анна", "email": email, "role": "manager", "password": PASSWORD}
    )
    assert r.status_code == 201, r.text
    assert "password" not in r.text and "hash" not in r.text
    with _browser(admin) as b:
        r = _sign_in(b, email.upper(), PASSWORD)
        assert r.status_code == 201, r.text
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        body = r.json()
        assert body["user"]["email"] == email and body["user"]["role"] == "manager"
        csrf = body["csrf_token"]
        # reads need only the cookie
        assert b.get("/api/v1/users/me").json()["email"] == email
        assert b.get("/api/v1/sessions/current").json()["csrf_token"] == csrf
        # writes need the CSRF token too
        note = {"name": "Клиент из консоли", "phones": ["+79161234567"]}
        r = b.post("/api/v1/contacts", json=note)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        r = b.post("/api/v1/contacts", json=note, headers={"X-CSRF-Token": "wrong"})
        assert r.status_code == 403
        r = b.post("/api/v1/contacts", json=note, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text
        # sign out ends the session on the server: the old cookie no longer works
        old = b.cookies.get("crm_session")
        assert b.delete("/api/v1/sessions/current", headers={"X-CSRF-Token": csrf}).status_code == 204
    with httpx.Client(base_url=admin.base_url, cookies={"crm_session": old or ""}) as stale:
        assert stale.get("/api/v1/users/me").status_code == 401


def test_wrong_password_and_unknown_email_get_the_same_401(admin: Api) -> None:
    email = _email()
    admin.post("/api/v1/users", json={"name": "Б", "email": email, "role": "viewer", "password": PASSWORD})
    with _browser(admin) as b:
        wrong = _sign_in(b, email, "не тот пароль 1")
        unknown = _sign_in(b, _email(), PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers


def test_short_password_is_a_422_naming_password(admin: Api) -> None:
    r = admin.post(
        "/api/v1/users", json={"name": "В", "email": _email(), "role": "viewer", "password": "short"}
    )
    assert r.status_code == 422 and "password" in r.json()["errors"]
    r = admin.put("/api/v1/users/me/password", json={"new_password": "short"})
    assert r.status_code == 422 and "new_password" in r.json()["errors"]


def test_first_admin_sets_email_and_password_with_its_key_then_signs_in(admin: Api) -> None:
    me = admin.get("/api/v1/users/me").json()
    email = _email()
    assert admin.patch(f"/api/v1/users/{me['id']}", json={"email": email}).status_code == 200
    r = admin.put("/api/v1/users/me/password", json={"new_password": PASSWORD})
    assert r.status_code == 204, r.text
    # once there is a password, changing it needs the current one
    r = admin.put("/api/v1/users/me/password", json={"new_password": "другой пароль 456"})
    assert r.status_code == 422 and "current_password" in r.json()["errors"]
    r = admin.put(
        "/api/v1/users/me/password", json={"current_password": "ошибка 1234567", "new_password": "x" * 12}
    )
    assert r.status_code == 422 and "current_password" in r.json()["errors"]
    with _browser(admin) as b:
        r = _sign_in(b, email, PASSWORD)
        assert r.status_code == 201, r.text
        csrf = r.json()["csrf_token"]
        r = b.put(
            "/api/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": "новый пароль 789"},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 204, r.text
        assert b.get("/api/v1/users/me").status_code == 200  # the session that changed it stays
        assert _sign_in(b, email, PASSWORD).status_code == 401
        assert _sign_in(b, email, "новый пароль 789").status_code == 201


def test_admin_sets_a_users_password_and_api_keys_keep_working(admin: Api) -> None:
    email = _email()
    user = admin.post("/api/v1/users", json={"name": "Г", "email": email, "role": "manager"}).json()
    manager = admin.as_key(user["api_key"])
    r = manager.put(f"/api/v1/users/{user['id']}/password", json={"new_password": PASSWORD})
    assert r.status_code == 403
    assert (
        admin.put(f"/api/v1/users/{user['id']}/password", json={"new_password": PASSWORD}).status_code == 204
    )
    assert admin.put("/api/v1/users/nope/password", json={"new_password": PASSWORD}).status_code == 404
    with _browser(admin) as b:
        assert _sign_in(b, email, PASSWORD).status_code == 201
    assert manager.get("/api/v1/users/me").status_code == 200


def test_repeated_failed_sign_ins_are_limited_per_account(admin: Api) -> None:
    email = _email()
    admin.post("/api/v1/users", json={"name": "Д", "email": email, "role": "viewer", "password": PASSWORD})
    with _browser(admin) as b:
        codes = [_sign_in(b, email, f"неверный пароль {i}").status_code for i in range(5)]
        assert codes == [401] * 5
        r = _sign_in(b, email, PASSWORD)  # even the right password waits now
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_the_event_stream_accepts_the_session_cookie(admin: Api) -> None:
    email = _email()
    admin.post("/api/v1/users", json={"name": "Е", "email": email, "role": "admin", "password": PASSWORD})
    with _browser(admin) as b:
        assert _sign_in(b, email, PASSWORD).status_code == 201
        with b.stream("GET", "/api/v1/events/stream", params={"heartbeat": 1}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
    with httpx.Client(base_url=admin.base_url) as anonymous:
        assert anonymous.get("/api/v1/events/stream").status_code == 401


def test_the_session_answer_carries_the_tenants_currency(admin: Api) -> None:
    email = _email()
    admin.post("/api/v1/users", json={"name": "Ж", "email": email, "role": "viewer", "password": PASSWORD})
    assert admin.get("/api/v1/settings").json()["currency"] == "RUB"
    r = admin.patch("/api/v1/settings", json={"currency": "eur"})
    assert r.status_code == 422 and "currency" in r.json()["errors"]
    assert admin.patch("/api/v1/settings", json={"currency": "EUR"}).json()["currency"] == "EUR"
    with _browser(admin) as b:
        assert _sign_in(b, email, PASSWORD).json()["tenant"]["currency"] == "EUR"
        assert b.get("/api/v1/sessions/current").json()["tenant"]["currency"] == "EUR"


def test_two_console_sessions_never_share_idempotent_answers(admin: Api) -> None:
    """The same Idempotency-Key and body from two signed-in users are two requests: the answers
    are kept per session, as they are per API key."""
    made = []
    for name in ("Первый", "Второй"):
        email = _email()
        r = admin.post(
            "/api/v1/users", json={"name": name, "email": email, "role": "manager", "password": PASSWORD}
        )
        assert r.status_code == 201, r.text
        made.append(email)
    key = uuid.uuid4().hex
    body = {"name": "Общий клиент"}
    owners = []
    for email in made:
        with _browser(admin) as b:
            csrf = _sign_in(b, email, PASSWORD).json()["csrf_token"]
            r = b.post("/api/v1/contacts", json=body, headers={"X-CSRF-Token": csrf, "Idempotency-Key": key})
            assert r.status_code == 201, r.text
            owners.append((r.json()["id"], r.json()["owner_id"]))
    assert owners[0][0] != owners[1][0]  # the second user got a contact of its own
    assert owners[0][1] != owners[1][1]


def test_a_console_write_replayed_with_its_idempotency_key_gets_the_first_answer(admin: Api) -> None:
    email = _email()
    admin.post(
        "/api/v1/users", json={"name": "Повтор", "email": email, "role": "manager", "password": PASSWORD}
    )
    key = uuid.uuid4().hex
    with _browser(admin) as b:
        csrf = _sign_in(b, email, PASSWORD).json()["csrf_token"]
        headers = {"X-CSRF-Token": csrf, "Idempotency-Key": key}
        first = b.post("/api/v1/contacts", json={"name": "Один раз"}, headers=headers)
        again = b.post("/api/v1/contacts", json={"name": "Один раз"}, headers=headers)
        assert first.status_code == again.status_code == 201, again.text
        assert again.json()["id"] == first.json()["id"]
        # the replay re-checks the caller: without the CSRF token a replay is refused like a write
        refused = b.post("/api/v1/contacts", json={"name": "Один раз"}, headers={"Idempotency-Key": key})
        assert refused.status_code == 403
