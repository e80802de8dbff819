"""WhatsApp, Avito and VK community messages through the real hub: the channel is created with
its required secrets and config, a signed (or URL-token) inbound message lands on the right
contact's timeline once, and a bad signature or token is 401 and creates nothing."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.connectors.adapters.base import hmac_sha256_hex
from tests.support.hub import Api, eventually, touches

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messengers"
WA_SECRETS = {"app_secret": "wa-app-secret", "verify_token": "wa-verify", "access_token": "EAAG-test"}
AVITO_SECRETS = {"client_id": "cid", "client_secret": "csecret", "token": "avito-hook-token"}


def fixtures(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def create(admin: Api, body: dict[str, Any]) -> httpx.Response:
    return admin.post("/api/v1/channels", json={"name": body["kind"], "intake": "auto", **body})


def health(admin: Api, channel_id: str) -> dict[str, Any]:
    return admin.get(f"/api/v1/channels/{channel_id}").json()["health"]


def only_contact(admin: Api) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    def probe() -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        items = admin.get("/api/v1/contacts").json()["items"]
        if len(items) != 1:
            return None
        timeline = touches(admin, items[0]["id"])
        return (items[0], timeline) if timeline else None

    return eventually(probe)


# ---- WhatsApp ------------------------------------------------------------------------------------


def wa_channel(admin: Api) -> dict[str, Any]:
    r = create(
        admin, {"kind": "whatsapp", "secrets": WA_SECRETS, "config": {"phone_number_id": "106540352242922"}}
    )
    assert r.status_code == 201, r.text
    return r.json()


def wa_post(
    channel: dict[str, Any], doc: dict[str, Any], secret: str = WA_SECRETS["app_secret"]
) -> httpx.Response:
    body = json.dumps(doc).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + hmac_sha256_hex(secret, body),
    }
    return httpx.post(channel["webhook_url"], content=body, headers=headers)


def test_whatsapp_channel_needs_its_secrets_and_phone_number_id(admin: Api) -> None:
    r = create(admin, {"kind": "whatsapp", "secrets": {"app_secret": "x"}})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert {"secrets.verify_token", "secrets.access_token", "config.phone_number_id"} <= set(
        r.json()["errors"]
    )
    r = create(admin, {"kind": "whatsapp", "secrets": WA_SECRETS, "config": {"phone_number_id": "1/../me"}})
    assert r.status_code == 422 and "config.phone_number_id" in r.json()["errors"]


def test_whatsapp_verification_and_a_signed_message_on_the_senders_card(admin: Api) -> None:
    channel = wa_channel(admin)
    url = channel["webhook_url"]
    ok = httpx.get(
        url, params={"hub.mode": "subscribe", "hub.verify_token": "wa-verify", "hub.challenge": "8315"}
    )
    assert ok.status_code == 200 and ok.text == "8315"
    bad = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "no", "hub.challenge": "1"})
    assert bad.status_code == 403

    doc = fixtures("whatsapp")["image"]
    for _ in range(2):  # Meta redelivers until it gets a 200
        assert wa_post(channel, doc).status_code == 200
    contact, _ = only_contact(admin)
    assert contact["name"] == "Sheena Nelson" and contact["phones"] == ["+16505551234"]
    assert contact["source"]["kind"] == "whatsapp"
    eventually(lambda: health(admin, channel["id"])["received"] == 2)
    time.sleep(0.3)
    (item,) = touches(admin, contact["id"])
    assert item["kind"] == "message" and item["direction"] == "in"
    assert item["data"]["text"] == "This is the one I mean"
    assert item["data"]["attachments"][0]["id"] == "1003383421387256"


def test_whatsapp_bad_signature_is_401_and_statuses_alone_create_no_contact(admin: Api) -> None:
    channel = wa_channel(admin)
    r = wa_post(channel, fixtures("whatsapp")["text"], secret="not-the-app-secret")
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    assert wa_post(channel, fixtures("whatsapp")["statuses"]).status_code == 200
    eventually(lambda: (h := health(admin, channel["id"]))["rejected"] == 1 and h["received"] == 1)
    time.sleep(0.5)
    assert admin.get("/api/v1/contacts").json()["items"] == []


# ---- Avito ---------------------------------------------------------------------------------------


def avito_channel(admin: Api, secrets: dict[str, str] = AVITO_SECRETS) -> dict[str, Any]:
    r = create(admin, {"kind": "avito", "secrets": secrets, "config": {"user_id": 94235311}})
    assert r.status_code == 201, r.text
    return r.json()


def test_avito_channel_needs_its_credentials_and_user_id(admin: Api) -> None:
    r = create(admin, {"kind": "avito", "secrets": {"client_id": "x"}})
    assert r.status_code == 422
    assert {"secrets.client_secret", "config.user_id"} <= set(r.json()["errors"])


def test_avito_message_lands_on_the_clients_card_with_the_listing(admin: Api) -> None:
    channel = avito_channel(admin)
    assert channel["health"]["unauthenticated"] is False
    url = channel["webhook_url"]
    fx = fixtures("avito")
    assert httpx.post(url, json=fx["text"]).status_code == 401  # no token: refused, nothing kept
    assert httpx.post(url, params={"token": "wrong"}, json=fx["text"]).status_code == 401
    assert httpx.post(url, params={"token": "avito-hook-token"}, json=fx["own_answer"]).status_code == 200
    assert httpx.post(url, params={"token": "avito-hook-token"}, json=fx["text"]).status_code == 200
    contact, timeline = only_contact(admin)
    assert contact["source"]["kind"] == "avito"
    (item,) = timeline
    assert item["kind"] == "message" and item["direction"] == "in"
    assert item["data"]["item_id"] == "1768287444"
    assert item["data"]["chat_id"] == "u2i-PJIKqOpqbkqzeWcQ~L0ZOw"
    h = health(admin, channel["id"])
    assert h["rejected"] == 2 and h["discarded_ignored"] == 1


def test_an_avito_channel_without_a_hook_token_says_it_is_unauthenticated(admin: Api) -> None:
    channel = avito_channel(admin, {"client_id": "cid", "client_secret": "csecret"})
    assert channel["health"]["unauthenticated"] is True
    assert "secrets.token" in channel["health"]["warning"]


# ---- VK community messages -----------------------------------------------------------------------


def test_vk_message_with_attachments_lands_on_the_writers_card(admin: Api) -> None:
    r = create(
        admin,
        {"kind": "vk", "secrets": {"secret": "vk-s3cret", "confirmation": "c0nf", "access_token": "vk1.a.t"}},
    )
    assert r.status_code == 201, r.text
    channel = r.json()
    doc = fixtures("vk")["message_new_attachments"]
    assert httpx.post(channel["webhook_url"], json=doc).text == "ok"
    forged = copy.deepcopy(doc)
    forged["secret"] = "guess"
    assert httpx.post(channel["webhook_url"], json=forged).status_code == 401
    _, timeline = only_contact(admin)
    (item,) = timeline
    assert item["kind"] == "message" and item["direction"] == "in"
    assert [a["type"] for a in item["data"]["attachments"]] == ["photo", "doc", "audio_message"]
    assert item["data"]["peer_id"] == "1234567"


def test_provider_base_urls_pass_the_outbound_guard(admin: Api) -> None:
    r = create(
        admin,
        {
            "kind": "whatsapp",
            "secrets": WA_SECRETS,
            "config": {"phone_number_id": "1", "api_base_url": "ftp://graph.example.com"},
        },
    )
    assert r.status_code == 422 and "config.api_base_url" in r.json()["errors"]
