"""VK community messages: message_new with attachments, message_reply (our side's answer), threads."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.adapters.vk import ADAPTER
from services.connectors.senders.vk import random_id_for
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "fixtures"
FIXTURES = json.loads((ROOT / "messengers" / "vk.json").read_text())
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def channel() -> ChannelView:
    return ChannelView(
        id="vk1",
        tenant_id="t1",
        kind="vk",
        config={"group_id": 211234567},
        secrets={"secret": "vk-s3cret", "confirmation": "a1b2c3d4", "access_token": "vk1.a.token"},
    )


def handle(doc: Any):
    body = json.dumps(doc, ensure_ascii=False).encode()
    req = RawRequest(
        "POST", "https://crm.example.com/hooks/vk1", "", "", {"content-type": "application/json"}, body
    )
    return ADAPTER.handle(channel(), req, NOW)


def test_message_new_is_on_the_peers_thread_with_the_vk_message_id():
    doc = json.loads((ROOT / "forms" / "vk_message_new.json").read_text())
    (item,) = handle(doc).items
    assert item.direction == "in" and item.sender.handles == ("vk:1234567",)
    assert item.thread is not None
    assert item.thread.key == "peer:1234567" and item.thread.address == {"peer_id": 1234567}
    assert item.provider_message_id == "1234567_321"  # id 0: the conversation message id names it


def test_attachments_are_summarised():
    (item,) = handle(FIXTURES["message_new_attachments"]).items
    assert item.provider_message_id == "5320"
    assert item.summary == "[photo, doc, audio_message]"
    assert item.data["attachments"] == [
        {"type": "photo", "url": "https://sun9-1.userapi.com/s/v1/ig2/large.jpg"},
        {
            "type": "doc",
            "title": "Реквизиты.pdf",
            "ext": "pdf",
            "url": "https://vk.com/doc1234567_671234567?hash=abc&dl=def",
        },
        {"type": "audio_message", "duration_s": 7, "url": "https://psv4.userapi.com/audio_msg.ogg"},
    ]


def test_message_reply_is_our_sides_answer_about_the_client():
    out = handle(FIXTURES["message_reply"])
    assert out.response.body == b"ok"
    (item,) = out.items
    assert item.kind == "message" and item.direction == "out"
    assert item.sender.handles == ("vk:1234567",)  # the client, never the community
    assert item.thread is not None and item.thread.key == "peer:1234567"
    assert item.provider_message_id == "5321"
    assert item.data["random_id"] == "1290487123"
    assert item.data["admin_author_id"] == "7654321"
    assert item.data["text"].startswith("Доставка по Москве")
    assert item.idempotency_key == "vk:9a8b7c6d5e4f30211203f4e5d6c7b8a9f0e1d2c3"


def test_the_echo_of_a_hub_sent_answer_carries_the_senders_random_id():
    doc = copy.deepcopy(FIXTURES["message_reply"])
    doc["object"]["random_id"] = random_id_for("outbox:msg-42")
    (item,) = handle(doc).items
    assert item.data["random_id"] == str(random_id_for("outbox:msg-42"))


def test_message_reply_without_peer_is_422():
    doc = copy.deepcopy(FIXTURES["message_reply"])
    del doc["object"]["peer_id"]
    with pytest.raises(HookError) as info:
        handle(doc)
    assert info.value.status == 422 and "object.peer_id" in info.value.errors


def test_message_reply_with_a_bad_secret_is_401():
    doc = copy.deepcopy(FIXTURES["message_reply"])
    doc["secret"] = "wrong"
    with pytest.raises(HookError) as info:
        handle(doc)
    assert info.value.status == 401


def test_a_group_chat_message_is_on_the_chats_thread_and_names_the_writer():
    doc = copy.deepcopy(FIXTURES["message_new_attachments"])
    doc["object"]["message"]["peer_id"] = 2000000003
    (item,) = handle(doc).items
    assert item.thread is not None and item.thread.key == "peer:2000000003"
    assert item.sender.handles == ("vk:1234567",)


def test_hostile_variations_never_crash():
    for name in ("message_new_attachments", "message_reply"):
        for doc in mutations(FIXTURES[name], random.Random(name), 200):
            try:
                out = handle(doc)
            except HookError as exc:
                assert exc.status in (400, 401, 415, 422)
                continue
            for item in out.items:
                json.dumps(item.data)
                assert item.thread is None or item.thread.key.startswith("peer:")


def test_messages_without_a_person_create_nothing():
    bot = copy.deepcopy(FIXTURES["message_new_attachments"])
    bot["object"]["message"]["from_id"] = -5551234
    bot["object"]["message"]["peer_id"] = 2000000003
    assert handle(bot).discarded == "ignored"
    in_chat = copy.deepcopy(FIXTURES["message_reply"])
    in_chat["object"]["peer_id"] = 2000000003
    assert handle(in_chat).discarded == "ignored"
