"""An admin sees a channel's recent rejected hooks, to debug a provider's setup."""

from __future__ import annotations

import httpx
import pytest

from tests.support.hub import Api, eventually

pytestmark = pytest.mark.e2e


def test_rejected_hooks_of_a_channel_newest_first_without_headers_or_query(admin: Api, root: Api) -> None:
    channel = admin.post(
        "/api/v1/channels", json={"kind": "form", "name": "Сайт", "secrets": {"token": "s3cret-token"}}
    ).json()
    r = httpx.post(
        channel["webhook_url"] + "?token=s3cret-token",
        content=b"<lead/>",
        headers={"Content-Type": "application/xml"},
    )
    assert r.status_code == 415
    r = httpx.post(
        channel["webhook_url"],
        content='{"name": "Анна", "phone": "+7916'.encode(),
        headers={"Content-Type": "application/json", "X-CRM-Token": "s3cret-token"},
    )
    assert r.status_code == 400

    def two() -> list[dict] | None:
        r = admin.get(f"/api/v1/channels/{channel['id']}/rejected-hooks")
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        return items if len(items) == 2 else None

    newest, oldest = eventually(two)
    assert (newest["status"], oldest["status"]) == (400, 415)
    assert newest["body_excerpt"].startswith('{"name": "Анна"')
    assert "s3cret-token" not in str(newest) and "headers" not in newest

    manager = admin.as_key(
        admin.post("/api/v1/users", json={"name": "М", "role": "manager"}).json()["api_key"]
    )
    assert manager.get(f"/api/v1/channels/{channel['id']}/rejected-hooks").status_code == 403
    other = root.post("/api/v1/tenants", json={"name": "Другой"}).json()["api_key"]
    assert admin.as_key(other).get(f"/api/v1/channels/{channel['id']}/rejected-hooks").status_code == 404
