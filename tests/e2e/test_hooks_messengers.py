"""Messenger hooks through the gateway: Telegram bot webhooks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hub import Api, eventually, touches

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telephony"
SECRET = "tg-secret-token_1"


def updates() -> dict[str, Any]:
    return json.loads((FIXTURES / "telegram.json").read_text())


def make_channel(admin: Api) -> dict[str, Any]:
    r = admin.post(
        "/api/v1/channels",
        json={
            "kind": "telegram",
            "name": "Bot",
            "intake": "auto",
            "secrets": {"bot_token": "1:x", "secret_token": SECRET},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def post(channel: dict[str, Any], update: dict[str, Any], secret: str | None = SECRET) -> httpx.Response:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return httpx.post(channel["webhook_url"], json=update, headers=headers)


def health(admin: Api, channel_id: str) -> dict[str, Any]:
    return admin.get(f"/api/v1/channels/{channel_id}").json()["health"]


def test_telegram_client_message_sharing_a_contact_becomes_a_message_interaction(admin: Api) -> None:
    channel = make_channel(admin)
    update = updates()["contact_shared"]
    for _ in range(2):  # Telegram redelivers until it gets a 2xx
        r = post(channel, update)
        assert r.status_code == 200, r.text

    def found() -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        items = admin.get("/api/v1/contacts", params={"phone": "+79161234567"}).json()["items"]
        if len(items) != 1:
            return None
        return items[0], touches(admin, items[0]["id"])

    contact, timeline = eventually(found)
    assert contact["name"] == "Иван Петров"
    assert contact["source"]["kind"] == "telegram"
    eventually(lambda: health(admin, channel["id"])["received"] == 2)
    time.sleep(0.3)
    timeline = touches(admin, contact["id"])
    assert len(timeline) == 1
    item = timeline[0]
    assert item["kind"] == "message" and item["direction"] == "in"
    assert item["data"]["chat_id"] == 123456789
    assert item["data"]["contact_phone"] == "79161234567"


def test_telegram_text_message_keeps_text_and_bot_messages_create_nothing(admin: Api) -> None:
    channel = make_channel(admin)
    u = updates()
    assert post(channel, u["bot_message"]).status_code == 200
    assert post(channel, u["edited_message"]).status_code == 200
    assert post(channel, u["text_message"]).status_code == 200

    def found() -> list[dict[str, Any]] | None:
        items = admin.get("/api/v1/contacts", params={"q": "Иван"}).json()["items"]
        return items or None

    contacts = eventually(found)
    assert len(contacts) == 1 and contacts[0]["name"] == "Иван Петров"
    item = eventually(lambda: touches(admin, contacts[0]["id"]))[0]
    assert item["kind"] == "message"
    assert item["data"]["text"] == "Здравствуйте! Сколько стоит доставка?"
    assert "Сколько стоит доставка" in item["summary"]
    h = health(admin, channel["id"])
    assert h["received"] == 1 and h["discarded_ignored"] == 2


def test_telegram_wrong_or_missing_secret_token_is_401_and_creates_nothing(admin: Api) -> None:
    channel = make_channel(admin)
    update = updates()["contact_shared"]
    assert post(channel, update, secret="not-it").status_code == 401
    r = post(channel, update, secret=None)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    h = health(admin, channel["id"])
    assert h["rejected"] == 2 and h["received"] == 0 and h["last_error"].startswith("401")
    assert admin.get("/api/v1/contacts").json()["items"] == []


def test_telegram_channel_without_a_secret_token_is_refused(admin: Api) -> None:
    r = admin.post(
        "/api/v1/channels",
        json={"kind": "telegram", "name": "Bot", "intake": "auto", "secrets": {"bot_token": "1:x"}},
    )
    assert r.status_code == 422
    assert "secrets.secret_token" in r.json()["errors"]
