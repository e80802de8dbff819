"""The gateway's public rules through a real hub: tenant isolation, roles, problem bodies, limits,
idempotency, API keys, audit log, metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hub import Api, HubProcess, eventually

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


def new_tenant(root: Api, name: str = "T") -> Api:
    r = root.post("/api/v1/tenants", json={"name": f"{name} {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return root.as_key(r.json()["api_key"])


def new_user(admin: Api, role: str, name: str | None = None) -> tuple[Api, str]:
    r = admin.post("/api/v1/users", json={"name": name or role.title(), "role": role})
    assert r.status_code == 201, r.text
    return admin.as_key(r.json()["api_key"]), r.json()["user_id"]


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith("https://") and body["title"] and body["detail"]
    return body


def ids(r: httpx.Response) -> set[str]:
    assert r.status_code == 200, r.text
    return {item["id"] for item in r.json()["items"]}


# ---- tenant isolation ---------------------------------------------------------------------------


def test_other_tenant_gets_404_for_every_kind_of_record_and_sees_none_in_lists(root: Api, admin: Api) -> None:
    contact = admin.post("/api/v1/contacts", json={"name": "Ольга Тайная", "phones": ["+79031234567"]}).json()
    channel = admin.post("/api/v1/channels", json={"kind": "form", "name": "Site", "intake": "auto"}).json()
    _, user_id = new_user(admin, "manager")
    key = admin.post("/api/v1/api-keys", json={"name": "ERP"}).json()
    sub = admin.post(
        "/api/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/hook", "events": ["contact.created"], "secret": "s3cret-value"},
    ).json()
    admin.patch(f"/api/v1/contacts/{contact['id']}", json={"name": "Ольга"})

    other = new_tenant(root, "B")
    for path in (
        f"/api/v1/contacts/{contact['id']}",
        f"/api/v1/contacts/{contact['id']}/timeline",
        f"/api/v1/channels/{channel['id']}",
        f"/api/v1/users/{user_id}",
        f"/api/v1/api-keys/{key['id']}",
        f"/api/v1/subscriptions/{sub['id']}",
        f"/api/v1/subscriptions/{sub['id']}/deliveries",
    ):
        body = assert_problem(other.get(path), 404)
        assert "Ольга" not in str(body) and "ERP" not in str(body)
    assert_problem(other.patch(f"/api/v1/contacts/{contact['id']}", json={"name": "x"}), 404)
    assert_problem(other.delete(f"/api/v1/contacts/{contact['id']}"), 404)
    assert_problem(other.patch(f"/api/v1/users/{user_id}", json={"role": "viewer"}), 404)
    assert_problem(other.delete(f"/api/v1/api-keys/{key['id']}"), 404)
    assert_problem(other.delete(f"/api/v1/subscriptions/{sub['id']}"), 404)

    assert contact["id"] not in ids(other.get("/api/v1/contacts"))
    assert other.get("/api/v1/contacts", params={"phone": "+79031234567"}).json()["items"] == []
    assert other.get("/api/v1/contacts", params={"q": "Ольга"}).json()["items"] == []
    assert channel["id"] not in ids(other.get("/api/v1/channels"))
    assert user_id not in ids(other.get("/api/v1/users"))
    assert key["id"] not in ids(other.get("/api/v1/api-keys"))
    assert sub["id"] not in ids(other.get("/api/v1/subscriptions"))
    assert other.get("/api/v1/audit", params={"record_id": contact["id"]}).json()["items"] == []
    # ... while the owner still sees all of it.
    assert admin.get(f"/api/v1/contacts/{contact['id']}").status_code == 200
    assert len(admin.get("/api/v1/audit", params={"record_id": contact["id"]}).json()["items"]) >= 1


# ---- roles --------------------------------------------------------------------------------------


def test_viewer_reads_but_every_write_is_403(admin: Api) -> None:
    viewer, _ = new_user(admin, "viewer")
    contact = admin.post("/api/v1/contacts", json={"name": "Unowned"}).json()
    assert viewer.get(f"/api/v1/contacts/{contact['id']}").status_code == 200
    assert contact["id"] in ids(viewer.get("/api/v1/contacts"))
    assert_problem(viewer.post("/api/v1/contacts", json={"name": "No"}), 403)
    assert_problem(viewer.patch(f"/api/v1/contacts/{contact['id']}", json={"name": "No"}), 403)
    assert_problem(viewer.delete(f"/api/v1/contacts/{contact['id']}"), 403)
    # 403 is decided before any lookup: a record that does not exist answers 403 too.
    assert_problem(viewer.patch("/api/v1/contacts/does-not-exist", json={"name": "No"}), 403)
    assert_problem(viewer.post("/api/v1/users", json={"name": "X", "role": "admin"}), 403)
    assert_problem(viewer.patch("/api/v1/settings", json={"managers_see_all": True}), 403)


def test_manager_is_403_on_admin_routes(admin: Api) -> None:
    manager, manager_id = new_user(admin, "manager")
    _, other_id = new_user(admin, "viewer")
    assert_problem(manager.post("/api/v1/users", json={"name": "X", "role": "viewer"}), 403)
    assert_problem(manager.patch(f"/api/v1/users/{other_id}", json={"role": "admin"}), 403)
    assert_problem(manager.get("/api/v1/settings"), 403)
    assert_problem(manager.patch("/api/v1/settings", json={"managers_see_all": True}), 403)
    assert_problem(manager.get("/api/v1/audit"), 403)
    assert_problem(manager.get("/api/v1/subscriptions"), 403)
    body = {"url": "http://127.0.0.1:9/", "events": ["*"], "secret": "s3cret-value"}
    assert_problem(manager.post("/api/v1/subscriptions", json=body), 403)
    assert_problem(manager.post("/api/v1/channels", json={"kind": "form", "name": "x"}), 403)
    assert_problem(manager.post("/api/v1/api-keys", json={"user_id": other_id}), 403)
    assert manager.get("/api/v1/users/me").json()["id"] == manager_id


def test_manager_sees_own_and_unowned_and_others_only_when_tenant_allows(admin: Api) -> None:
    m1, m1_id = new_user(admin, "manager", "M1")
    _, m2_id = new_user(admin, "manager", "M2")
    mine = m1.post("/api/v1/contacts", json={"name": "Mine"}).json()
    unowned = admin.post("/api/v1/contacts", json={"name": "Nobody's"}).json()
    theirs = admin.post("/api/v1/contacts", json={"name": "Theirs", "owner_id": m2_id}).json()
    assert mine["owner_id"] == m1_id

    visible = ids(m1.get("/api/v1/contacts"))
    assert {mine["id"], unowned["id"]} <= visible and theirs["id"] not in visible
    assert_problem(m1.get(f"/api/v1/contacts/{theirs['id']}"), 404)
    assert_problem(m1.patch(f"/api/v1/contacts/{theirs['id']}", json={"name": "x"}), 404)
    assert m1.patch(f"/api/v1/contacts/{unowned['id']}", json={"name": "Now named"}).status_code == 200

    assert admin.patch("/api/v1/settings", json={"managers_see_all": True}).status_code == 200

    def sees_theirs() -> bool:
        return m1.get(f"/api/v1/contacts/{theirs['id']}").status_code == 200

    eventually(sees_theirs, timeout=10)
    assert theirs["id"] in ids(m1.get("/api/v1/contacts"))
    # Reading all is not writing all.
    assert_problem(m1.patch(f"/api/v1/contacts/{theirs['id']}", json={"name": "x"}), 404)


# ---- problem bodies -----------------------------------------------------------------------------


def test_401_without_or_with_a_bad_key(hub: HubProcess) -> None:
    anon = Api(hub.url)
    assert_problem(anon.get("/api/v1/contacts"), 401)
    assert_problem(anon.as_key("crm_0000000000000000_nope").get("/api/v1/contacts"), 401)
    assert_problem(anon.as_key("not-a-key").get("/api/v1/users/me"), 401)


def test_tenant_creation_needs_the_root_token(root: Api, admin: Api) -> None:
    assert_problem(Api(root.base_url).post("/api/v1/tenants", json={"name": "X"}), 401)
    assert_problem(admin.post("/api/v1/tenants", json={"name": "X"}), 403)


def test_404_for_unknown_route_and_record_is_problem_json(admin: Api) -> None:
    assert_problem(admin.get("/api/v1/no-such-thing"), 404)
    assert_problem(admin.get("/api/v1/contacts/01nosuchcontact0000000000"), 404)


def test_413_for_a_chunked_body_over_the_limit(admin: Api) -> None:
    """No Content-Length: the limit is found while reading, and the answer is still a 413."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 65536  # 2.5 MiB in all
        yield b'"}'

    r = admin.post("/api/v1/contacts", content=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(r, 413)


def test_413_for_a_body_over_the_limit(admin: Api) -> None:
    body = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    r = admin.post("/api/v1/contacts", content=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 413)


def test_415_for_a_body_that_is_not_json(admin: Api) -> None:
    r = admin.post("/api/v1/contacts", content=b"name=Ivan", headers={"Content-Type": "text/plain"})
    body = assert_problem(r, 415)
    assert body["code"] == "unsupported_media_type"
    r = admin.patch("/api/v1/settings", content=b"<x/>", headers={"Content-Type": "application/xml"})
    assert_problem(r, 415)


def test_422_names_the_bad_fields(admin: Api) -> None:
    body = assert_problem(admin.post("/api/v1/users", json={"name": "X", "role": "boss"}), 422)
    assert "role" in body["errors"]
    body = assert_problem(admin.post("/api/v1/users", json={"name": "X", "role": "viewer", "extra": 1}), 422)
    assert "extra" in body["errors"]
    body = assert_problem(admin.patch("/api/v1/settings", json={"timezone": "Mars/Olympus"}), 422)
    assert "timezone" in body["errors"]
    r = admin.post("/api/v1/users", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.headers["content-type"].startswith(PROBLEM)
    assert_problem(admin.get("/api/v1/users", params={"limit": 501}), 422)


@pytest.fixture(scope="module")
def slow_hub(rabbit: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub with a low rate limit (2 requests/s, burst 4)."""
    proc = HubProcess(
        rabbit_url=rabbit,
        mongo_url=mongo_url,
        data_dir=Path(tmp_path_factory.mktemp("hub-rate")),
        env={"CRM_RATE_LIMIT": "2"},
    )
    with proc.serving():
        yield proc


def test_429_with_retry_after_per_key(slow_hub: HubProcess) -> None:
    root = Api(slow_hub.url, slow_hub.root_token)
    a = new_tenant(root, "A")
    time.sleep(1.0)
    b = new_tenant(root, "B")
    answers = [a.get("/api/v1/users/me") for _ in range(8)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited, [r.status_code for r in answers]
    body = assert_problem(limited[0], 429)
    assert body["code"] == "rate_limited"
    assert int(limited[0].headers["Retry-After"]) >= 1
    # Another key has its own bucket.
    assert b.get("/api/v1/users/me").status_code == 200
    time.sleep(int(limited[0].headers["Retry-After"]))
    assert a.get("/api/v1/users/me").status_code == 200


# ---- idempotency ----------------------------------------------------------------------------------


def test_idempotent_post_replays_the_first_answer_and_creates_one_record(admin: Api) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    name = f"Idem {uuid.uuid4().hex[:6]}"
    first = admin.post("/api/v1/contacts", json={"name": name}, headers=key)
    second = admin.post("/api/v1/contacts", json={"name": name}, headers=key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    found = admin.get("/api/v1/contacts", params={"q": name.split()[1]}).json()["items"]
    assert [c["id"] for c in found] == [first.json()["id"]]

    other = admin.post("/api/v1/contacts", json={"name": name + " 2"}, headers=key)
    body = assert_problem(other, 422)
    assert "Idempotency-Key" in body["errors"]
    # Without the header, the same body makes a second record.
    assert admin.post("/api/v1/contacts", json={"name": name}).json()["id"] != first.json()["id"]


def test_idempotency_keys_are_per_api_key(admin: Api, root: Api) -> None:
    other = new_tenant(root, "B")
    key = {"Idempotency-Key": "shared-" + uuid.uuid4().hex}
    a = admin.post("/api/v1/contacts", json={"name": "Same"}, headers=key)
    b = other.post("/api/v1/contacts", json={"name": "Same"}, headers=key)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_a_replay_never_answers_a_revoked_key_and_401s_are_not_remembered(admin: Api) -> None:
    secret = admin.post("/api/v1/api-keys", json={"name": "replay"}).json()
    extra = admin.as_key(secret["api_key"])
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = extra.post("/api/v1/contacts", json={"name": "Replayed"}, headers=key)
    assert first.status_code == 201
    assert admin.delete(f"/api/v1/api-keys/{secret['id']}").status_code == 204
    assert_problem(extra.post("/api/v1/contacts", json={"name": "Replayed"}, headers=key), 401)

    # A 401 is not stored as the answer: the same key works once the caller authenticates.
    bogus = admin.as_key("crm_0000000000000000_nope")
    shared = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
    assert_problem(bogus.post("/api/v1/contacts", json={"name": "N"}, headers=shared), 401)
    again = bogus.post("/api/v1/contacts", json={"name": "N"}, headers=shared)
    assert_problem(again, 401)
    assert again.headers.get("idempotent-replayed") is None


def test_an_idempotency_key_over_200_characters_is_refused(admin: Api) -> None:
    body = assert_problem(
        admin.post("/api/v1/contacts", json={"name": "L"}, headers={"Idempotency-Key": "x" * 500}), 422
    )
    assert "Idempotency-Key" in body["errors"]
    ok = admin.post("/api/v1/contacts", json={"name": "L"}, headers={"Idempotency-Key": "x" * 200})
    assert ok.status_code == 201


# ---- keys, users, audit, metrics ------------------------------------------------------------------


def test_api_keys_are_shown_once_listed_with_last_use_and_revocable(admin: Api) -> None:
    created = admin.post("/api/v1/api-keys", json={"name": "1C"})
    assert created.status_code == 201
    secret = created.json()["api_key"]
    key_id = created.json()["id"]
    assert secret.startswith(f"crm_{key_id}_")
    extra = admin.as_key(secret)
    assert extra.get("/api/v1/users/me").status_code == 200

    listed = {k["id"]: k for k in admin.get("/api/v1/api-keys").json()["items"]}
    assert listed[key_id]["last_used_at"] is not None
    assert all(k.get("api_key") is None for k in listed.values())
    assert secret not in admin.get(f"/api/v1/api-keys/{key_id}").text

    assert admin.delete(f"/api/v1/api-keys/{key_id}").status_code == 204
    assert_problem(extra.get("/api/v1/users/me"), 401)
    assert admin.get(f"/api/v1/api-keys/{key_id}").json()["active"] is False
    assert admin.get("/api/v1/users/me").status_code == 200


def test_deactivated_user_key_stops_working_and_role_change_applies(admin: Api) -> None:
    manager, manager_id = new_user(admin, "manager")
    assert manager.post("/api/v1/contacts", json={"name": "Before"}).status_code == 201
    r = admin.patch(f"/api/v1/users/{manager_id}", json={"role": "viewer"})
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    assert_problem(manager.post("/api/v1/contacts", json={"name": "After"}), 403)
    assert admin.patch(f"/api/v1/users/{manager_id}", json={"active": False}).json()["active"] is False
    assert_problem(manager.get("/api/v1/users/me"), 401)
    me = admin.get("/api/v1/users/me").json()
    assert_problem(admin.patch(f"/api/v1/users/{me['id']}", json={"role": "viewer"}), 422)


def test_users_list_paginates_with_cursor(admin: Api) -> None:
    for i in range(3):
        new_user(admin, "viewer", f"V{i}")
    first = admin.get("/api/v1/users", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = admin.get("/api/v1/users", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    seen = [u["id"] for u in first["items"] + rest["items"]]
    assert len(seen) == len(set(seen)) == 4
    viewers = admin.get("/api/v1/users", params={"role": "viewer"}).json()["items"]
    assert {u["role"] for u in viewers} == {"viewer"} and len(viewers) == 3


def test_audit_log_records_who_changed_which_record(admin: Api) -> None:
    manager, manager_id = new_user(admin, "manager")
    contact = manager.post("/api/v1/contacts", json={"name": "Audited"}).json()
    manager.patch(f"/api/v1/contacts/{contact['id']}", json={"name": "Audited twice"})
    manager.get(f"/api/v1/contacts/{contact['id']}")  # reads are not audited
    entries = admin.get("/api/v1/audit", params={"record_id": contact["id"]}).json()["items"]
    assert [(e["method"], e["user_id"]) for e in entries] == [("PATCH", manager_id), ("POST", manager_id)]
    assert entries[0]["route"] == "/api/v1/contacts/{contact_id}" and entries[0]["status"] == 200
    assert entries[0]["at"] >= entries[1]["at"]
    by_user = admin.get("/api/v1/audit", params={"user_id": manager_id}).json()["items"]
    assert {e["record_id"] for e in by_user} == {contact["id"]}


def test_metrics_count_requests_by_route_template(admin: Api, hub: HubProcess) -> None:
    contact = admin.post("/api/v1/contacts", json={"name": "Metered"}).json()
    admin.get(f"/api/v1/contacts/{contact['id']}")
    assert httpx.get(hub.url + "/metrics").status_code == 401  # not open to anyone
    assert httpx.get(hub.url + "/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    text = httpx.get(hub.url + "/metrics", headers={"Authorization": f"Bearer {hub.root_token}"}).text
    assert 'crm_http_requests_total{method="GET",route="/api/v1/contacts/{contact_id}",status="200"}' in text
    assert "crm_http_request_seconds_bucket" in text
    assert "crm_webhook_pending" in text and "crm_event_lag_seconds_count" in text
    assert contact["id"] not in text


def test_openapi_documents_every_route_with_problem_answers(hub: HubProcess) -> None:
    schema = httpx.get(hub.url + "/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/tenants",
        "/api/v1/users",
        "/api/v1/users/{user_id}",
        "/api/v1/api-keys/{key_id}",
        "/api/v1/events/stream",
        "/api/v1/subscriptions/{subscription_id}/deliveries",
        "/api/v1/audit",
        "/hooks/{channel_id}",
        "/metrics",
    ):
        assert path in paths, path
    op = paths["/api/v1/users/{user_id}"]["patch"]
    for status in ("401", "403", "404", "413", "415", "422", "429", "504"):
        assert "application/problem+json" in op["responses"][status]["content"], status
    assert httpx.get(hub.url + "/docs").status_code == 200
