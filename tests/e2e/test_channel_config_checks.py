"""Channel config that the hub would misread is refused with a 422 naming the field."""

from __future__ import annotations

import pytest

from tests.support.hub import Api

PROBLEM = "application/problem+json"


@pytest.mark.parametrize("field", ["ssl", "smtp_ssl"])
def test_imap_channel_with_ssl_false_is_refused_naming_the_field(admin: Api, field: str) -> None:
    config = {"host": "imap.example.com", "username": "sales@example.com", "smtp_host": "smtp.example.com"}
    body = {"kind": "imap", "name": "Mail", "config": {**config, field: False}, "secrets": {"password": "pw"}}
    r = admin.post("/api/v1/channels", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["errors"] == {f"config.{field}": "must be one of tls, starttls, none"}

    body["config"] = {**config, field: "starttls"}
    r = admin.post("/api/v1/channels", json=body)
    assert r.status_code == 201, r.text
    r = admin.patch(f"/api/v1/channels/{r.json()['id']}", json={"config": {**config, field: "yes"}})
    assert r.status_code == 422, r.text
    assert f"config.{field}" in r.json()["errors"]
