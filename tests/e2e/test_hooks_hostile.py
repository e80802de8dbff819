"""Hostile input on every JSON-speaking hook: correctly signed but truncated JSON is a 400, a wrong
content type a 415, an oversized body a 413 — each a problem body, counted, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.hub import Api

pytestmark = pytest.mark.e2e


def _hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _typeform(body: bytes) -> dict[str, str]:
    return {"Typeform-Signature": "sha256=" + base64.b64encode(hmac.digest(b"s", body, "sha256")).decode()}


def _webflow(body: bytes) -> dict[str, str]:
    ts = str(int(time.time() * 1000))
    return {"x-webflow-timestamp": ts, "x-webflow-signature": _hex("s", ts.encode() + b":" + body)}


# kind, secrets, headers that make the body pass the channel's authentication
PROVIDERS: list[tuple[str, dict[str, str], Callable[[bytes], dict[str, str]]]] = [
    ("form", {"hmac_secret": "s"}, lambda b: {"X-Signature": f"sha256={_hex('s', b)}"}),
    ("asterisk", {"hmac_secret": "s"}, lambda b: {"X-Signature": f"sha256={_hex('s', b)}"}),
    ("typeform", {"secret": "s"}, _typeform),
    ("webflow", {"secret": "s"}, _webflow),
    ("yandex_forms", {"token": "s"}, lambda b: {"X-CRM-Token": "s"}),
    (
        "meta_leads",
        {"app_secret": "s", "verify_token": "v", "page_access_token": "p"},
        lambda b: {"X-Hub-Signature-256": f"sha256={_hex('s', b)}"},
    ),
    ("google_ads", {"key": "s"}, lambda b: {}),
    ("vk", {"confirmation": "c", "secret": "s"}, lambda b: {}),
    ("telegram", {"secret_token": "s"}, lambda b: {"X-Telegram-Bot-Api-Secret-Token": "s"}),
]


def make_channel(admin: Api, kind: str, secrets: dict[str, str]) -> dict[str, Any]:
    r = admin.post(
        "/api/v1/channels", json={"kind": kind, "name": kind, "intake": "auto", "secrets": secrets}
    )
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize(("kind", "secrets", "auth"), PROVIDERS, ids=[p[0] for p in PROVIDERS])
def test_truncated_json_wrong_type_and_oversized_bodies_are_clear_errors(
    admin: Api, kind: str, secrets: dict[str, str], auth: Callable[[bytes], dict[str, str]]
) -> None:
    channel = make_channel(admin, kind, secrets)
    url = channel["webhook_url"]

    truncated = b'{"google_key": "s", "secret": "s", "update_id": 1, "name": "Ann", "phone": "+7916'
    r = httpx.post(url, content=truncated, headers={"Content-Type": "application/json", **auth(truncated)})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")

    xml = b"<lead><name>Ann</name></lead>"
    r = httpx.post(url, content=xml, headers={"Content-Type": "application/xml", **auth(xml)})
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith("application/problem+json")

    huge = b'{"name": "' + b"x" * (1024 * 1024 + 1) + b'"}'
    r = httpx.post(url, content=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/problem+json")

    h = admin.get(f"/api/v1/channels/{channel['id']}").json()["health"]
    assert h["rejected"] == 2 and h["received"] == 0
    assert h["last_error"].startswith("415") and h["last_error_at"]
    assert admin.get("/api/v1/contacts").json()["items"] == []
