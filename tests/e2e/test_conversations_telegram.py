"""Conversations on Telegram, end to end: a customer's messages open and continue one
conversation on their card; the manager's answer goes out through the Bot API (a local stand-in
answering as Telegram does) exactly once, also when the hub is killed mid-send; statuses update
the message; the response-time report uses the answer."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_gateway_live import SseReader
from tests.support.conversations import conversations, messages
from tests.support.fake_telegram import FakeTelegram, fake_telegram
from tests.support.hub import Api, HubProcess, eventually, touches
from tests.support.servers import delete_namespace_queues

pytestmark = pytest.mark.e2e

SECRET = "tg-secret-token_1"


@pytest.fixture
def bot() -> Iterator[FakeTelegram]:
    with fake_telegram(f"{random.randint(10**8, 10**9)}:AA{uuid.uuid4().hex}") as server:
        yield server


def make_channel(admin: Api, bot: FakeTelegram, owner_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "telegram",
        "name": "Shop bot",
        "intake": "auto",
        "config": {"api_base_url": bot.url},
        "secrets": {"bot_token": bot.token, "secret_token": SECRET},
    }
    if owner_id:
        body["owner_id"] = owner_id
    r = admin.post("/api/v1/channels", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def customer_writes(channel: dict[str, Any], user_id: int, text: str, message_id: int) -> None:
    update = {
        "update_id": random.randint(10**8, 10**9),
        "message": {
            "message_id": message_id,
            "from": {"id": user_id, "is_bot": False, "first_name": "Иван", "last_name": "Петров"},
            "chat": {"id": user_id, "first_name": "Иван", "type": "private"},
            "date": int(time.time()),
            "text": text,
        },
    }
    r = httpx.post(channel["webhook_url"], json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert r.status_code == 200, r.text


def me(admin: Api) -> str:
    return str(admin.get("/api/v1/users/me").json()["id"])


def test_telegram_conversation_from_first_message_to_answer(admin: Api, bot: FakeTelegram) -> None:
    owner = me(admin)
    channel = make_channel(admin, bot, owner_id=owner)
    user_id = random.randint(10**8, 10**9)
    stream = SseReader(admin, types="message.received,message.sent,message.status_changed")
    customer_writes(channel, user_id, "Здравствуйте! Сколько стоит доставка?", 17)

    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)
    assert conv["kind"] == "telegram" and conv["unread"] == 1 and conv["assignee_id"] == owner
    assert conv["awaiting_reply_since"] is not None
    contact = admin.get(f"/api/v1/contacts/{conv['contact_id']}").json()
    assert f"telegram:{user_id}" in contact["handles"]
    (first,) = messages(admin, conv["id"])
    assert first["direction"] == "in" and first["status"] == "received"
    assert first["text"] == "Здравствуйте! Сколько стоит доставка?" and first["provider_message_id"] == "17"

    customer_writes(channel, user_id, "И ещё: вы работаете в субботу?", 18)
    eventually(lambda: len(messages(admin, conv["id"])) == 2, timeout=30)
    (again,) = conversations(admin, channel_id=channel["id"])
    assert again["id"] == conv["id"] and again["unread"] == 2
    assert again["awaiting_reply_since"] == conv["awaiting_reply_since"]  # waiting since the first
    assert [c["id"] for c in conversations(admin, unread="true", channel_id=channel["id"])] == [conv["id"]]
    assert conversations(admin, contact_id=conv["contact_id"])[0]["id"] == conv["id"]

    # the answer, sent twice with one Idempotency-Key (a client retry): one message, one send
    key = {"Idempotency-Key": f"answer-{uuid.uuid4().hex}"}
    body = {"text": "Доставка 300 ₽, в субботу работаем."}
    r = admin.post(f"/api/v1/conversations/{conv['id']}/messages", json=body, headers=key)
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["status"] in ("queued", "sent") and queued["direction"] == "out"
    assert queued["author_id"] == owner
    r2 = admin.post(f"/api/v1/conversations/{conv['id']}/messages", json=body, headers=key)
    assert r2.status_code == 202 and r2.json()["id"] == queued["id"]

    def sent() -> dict[str, Any] | None:
        out = [m for m in messages(admin, conv["id"]) if m["direction"] == "out"]
        return out[0] if len(out) == 1 and out[0]["status"] == "sent" else None

    answer = eventually(sent, timeout=30)
    assert answer["id"] == queued["id"] and answer["provider_message_id"] == "101"
    assert answer["sent_at"] is not None
    assert bot.sent == [{"chat_id": user_id, "text": body["text"]}]

    # the public stream: ids, status and times; never the text, the chat or the bot's token
    try:
        seen = stream.until(lambda e: e["event"] == "message.sent")
    finally:
        stream.close()
    received = [e["data"] for e in seen if e["event"] == "message.received"]
    assert [r["payload"]["provider_message_id"] for r in received] == ["17", "18"]
    sent_event = seen[-1]["data"]["payload"]
    assert sent_event["message_id"] == answer["id"] and sent_event["status"] == "sent"
    assert sent_event["awaiting_reply_since"] == conv["awaiting_reply_since"]
    frames = json.dumps([e["data"] for e in seen], ensure_ascii=False)
    assert "доставка" not in frames and bot.token not in frames and str(user_id) not in frames

    done = admin.get(f"/api/v1/conversations/{conv['id']}").json()
    assert done["unread"] == 0 and done["awaiting_reply_since"] is None

    # every message is on the card once: two in, one out
    def on_card() -> list[dict[str, Any]] | None:
        items = [i for i in touches(admin, conv["contact_id"]) if i["kind"] == "message"]
        return items if len(items) == 3 else None

    items = eventually(on_card, timeout=30)
    assert sorted(i["direction"] for i in items) == ["in", "in", "out"]
    assert len(messages(admin, conv["id"])) == 3  # the answer's timeline item is not a 4th message

    # the response-time report measures from the first unanswered message to the answer
    def replies() -> list[dict[str, Any]] | None:
        report = admin.get("/api/v1/reports/response-time").json()
        return report["replies"] or None

    (row,) = eventually(replies, timeout=30)
    assert row["assignee_id"] == owner and row["answered"] == 1
    assert 0 <= row["avg_minutes"] < 10
    time.sleep(1)
    assert len(bot.sent) == 1


def test_starting_from_the_card_and_a_flood_limit(admin: Api, bot: FakeTelegram) -> None:
    """``POST /contacts/{id}/messages`` reaches the contact's Telegram chat; Telegram's 429 with
    ``retry_after`` is waited out and the message sent once."""
    channel = make_channel(admin, bot)
    user_id = random.randint(10**8, 10**9)
    customer_writes(channel, user_id, "Привет", 5)
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)

    no_handle = admin.post(
        "/api/v1/contacts", json={"name": "Без телеграма", "phones": ["+79160000000"]}
    ).json()
    r = admin.post(
        f"/api/v1/contacts/{no_handle['id']}/messages", json={"channel_id": channel["id"], "text": "x"}
    )
    assert r.status_code == 422, r.text
    assert "channel_id" in r.json()["errors"]
    r = admin.post(
        f"/api/v1/contacts/{conv['contact_id']}/messages", json={"channel_id": "nope", "text": "x"}
    )
    assert r.status_code == 422 and "channel_id" in r.json()["errors"]
    r = admin.post(f"/api/v1/contacts/{conv['contact_id']}/messages", json={"channel_id": channel["id"]})
    assert r.status_code == 422, r.text

    bot.script = [429]
    r = admin.post(
        f"/api/v1/contacts/{conv['contact_id']}/messages",
        json={"channel_id": channel["id"], "text": "Ваш заказ готов"},
    )
    assert r.status_code == 202, r.text
    msg = r.json()
    assert msg["conversation_id"] == conv["id"]  # the same chat: the same conversation
    eventually(
        lambda: [m for m in messages(admin, conv["id"]) if m["id"] == msg["id"] and m["status"] == "sent"],
        timeout=30,
    )
    assert bot.requests == 2 and bot.sent == [{"chat_id": user_id, "text": "Ваш заказ готов"}]


def test_a_refused_message_fails_with_telegrams_reason(admin: Api, bot: FakeTelegram) -> None:
    channel = make_channel(admin, bot)
    customer_writes(channel, random.randint(10**8, 10**9), "Привет", 5)
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)
    r = admin.patch(f"/api/v1/channels/{channel['id']}", json={"secrets": {"bot_token": "1:wrong"}})
    assert r.status_code == 200, r.text
    r = admin.post(f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Ответ"})
    assert r.status_code == 202, r.text

    def failed() -> dict[str, Any] | None:
        out = [m for m in messages(admin, conv["id"]) if m["direction"] == "out"]
        return out[0] if out and out[0]["status"] == "failed" else None

    msg = eventually(failed, timeout=30)
    assert msg["error"] == "Telegram 401: Unauthorized"
    assert bot.sent == [] and bot.requests == 1
    still = admin.get(f"/api/v1/conversations/{conv['id']}").json()
    assert still["awaiting_reply_since"] is not None  # a failed answer is no answer


def test_conversations_of_others_are_not_visible(admin: Api, root: Api, bot: FakeTelegram) -> None:
    channel = make_channel(admin, bot)
    customer_writes(channel, random.randint(10**8, 10**9), "Привет", 5)
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)
    other = root.post("/api/v1/tenants", json={"name": f"Other {uuid.uuid4().hex[:6]}"}).json()
    stranger = root.as_key(other["api_key"])
    assert stranger.get(f"/api/v1/conversations/{conv['id']}/messages").status_code == 404
    assert (
        stranger.post(f"/api/v1/conversations/{conv['id']}/messages", json={"text": "x"}).status_code == 404
    )
    assert conversations(stranger) == []


def test_answer_reaches_telegram_once_when_the_hub_is_killed_mid_send(
    rabbit: str, mongo_url: str, tmp_path: Path, bot: FakeTelegram
) -> None:
    """The hub dies (kill -9) while Telegram holds the sendMessage request. The restarted hub
    finds the attempt recorded and does not send it again (sendMessage has no idempotency key):
    the message fails saying it may have been delivered; Telegram got it once."""
    hub = HubProcess(
        rabbit_url=rabbit, mongo_url=mongo_url, data_dir=tmp_path / "hub", env={"CRM_SEND_LEASE_S": "5"}
    )
    try:
        hub.start()
        root = Api(hub.url, hub.root_token)
        admin = root.as_key(root.post("/api/v1/tenants", json={"name": "Kill"}).json()["api_key"])
        channel = make_channel(admin, bot)
        user_id = random.randint(10**8, 10**9)
        customer_writes(channel, user_id, "Привет", 5)
        (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)
        bot.hold()
        r = admin.post(f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Ответ"})
        assert r.status_code == 202, r.text
        assert bot.held.wait(timeout=30), "the hub never called sendMessage"
        hub.kill()
        bot.release()
        restarted = hub.replica(same_port=True)
        restarted.env["CRM_SEND_LEASE_S"] = "5"
        restarted.start()
        hub = restarted

        def settled() -> dict[str, Any] | None:
            out = [m for m in messages(admin, conv["id"]) if m["direction"] == "out"]
            return out[0] if out and out[0]["status"] != "queued" else None

        msg = eventually(settled, timeout=60)
        assert msg["status"] == "failed" and "not sent again" in (msg["error"] or "")
        time.sleep(2)
        assert bot.requests == 1 and len(bot.sent) == 1
    finally:
        hub.stop()
        delete_namespace_queues(rabbit, hub.namespace)


def test_erasing_the_contact_removes_its_conversations(admin: Api, bot: FakeTelegram) -> None:
    channel = make_channel(admin, bot)
    customer_writes(channel, random.randint(10**8, 10**9), "Удалите мои данные", 9)
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)
    r = admin.post(f"/api/v1/contacts/{conv['contact_id']}/erase")
    assert r.status_code in (200, 202), r.text
    eventually(lambda: conversations(admin, channel_id=channel["id"]) == [], timeout=30)
    assert admin.get(f"/api/v1/conversations/{conv['id']}/messages").status_code == 404
