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


def test_the_same_telegram_user_is_one_contact_across_messages_and_a_later_shared_phone(admin: Api) -> None:
    """No phone, no email: the Telegram user id is the identity, so a second message (under another
    display name) lands on the same card, and the phone shared later is added to it."""
    import copy

    channel = make_channel(admin)
    first = copy.deepcopy(updates()["text_message"])
    user_id = first["message"]["from"]["id"]
    second = copy.deepcopy(first)
    second["update_id"] += 1
    second["message"]["message_id"] += 1
    second["message"]["text"] = "И ещё вопрос"
    second["message"]["from"]["first_name"] = "Ваня"
    shared = copy.deepcopy(updates()["contact_shared"])
    shared["update_id"] = first["update_id"] + 2
    shared["message"]["message_id"] = first["message"]["message_id"] + 2
    shared["message"]["from"]["id"] = user_id
    shared["message"]["contact"]["user_id"] = user_id
    for update in (first, second, shared):
        assert post(channel, update).status_code == 200
        # in order, as Telegram delivers one update at a time per bot
        eventually(lambda u=update: health(admin, channel["id"])["received"] >= 1 and u)
        time.sleep(0.5)

    contacts = eventually(
        lambda: admin.get("/api/v1/contacts", params={"phone": "+79161234567"}).json()["items"]
    )
    assert len(contacts) == 1
    items = eventually(lambda: (t := touches(admin, contacts[0]["id"])) and len(t) == 3 and t)
    assert sorted(i["data"]["message_id"] for i in items) == [
        first["message"]["message_id"] + n for n in range(3)
    ]
    assert len(admin.get("/api/v1/contacts").json()["items"]) == 1
