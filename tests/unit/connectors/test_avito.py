"""Avito Messenger webhooks: the URL token, client messages, our own side, system notices."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.connectors.adapters import get_adapter
from services.connectors.adapters.avito import ADAPTER
from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.hookguard import auth_health
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "messengers" / "avito.json").read_text()
)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def channel(token: str | None = "hook-token-1") -> ChannelView:
    secrets = {"client_id": "cid", "client_secret": "csecret"}
    if token:
        secrets["token"] = token
    return ChannelView("av1", "t1", "avito", {"user_id": 94235311}, secrets)


def request(doc: Any, query: str = "token=hook-token-1", headers: dict[str, str] | None = None) -> RawRequest:
    body = json.dumps(doc, ensure_ascii=False).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    return RawRequest("POST", f"https://crm.example.com/hooks/av1?{query}", "", query, hdrs, body)


def handle(doc: Any, ch: ChannelView | None = None, **kw: Any):
    return ADAPTER.handle(ch or channel(), request(doc, **kw), NOW)


def test_avito_is_a_hook_kind():
    assert get_adapter("avito") is ADAPTER


def test_client_text_is_one_inbound_message_on_the_chat_thread():
    (item,) = handle(FIXTURES["text"]).items
    assert item.kind == "message" and item.direction == "in"
    assert item.idempotency_key == "avito:bdcc5bac2d00345f1cc66fa657813958"
    assert item.provider_message_id == "bdcc5bac2d00345f1cc66fa657813958"
    assert item.sender.handles == ("avito:141906442",)
    assert item.thread is not None
    assert item.thread.key == "chat:u2i-PJIKqOpqbkqzeWcQ~L0ZOw"
    assert item.thread.address == {
        "chat_id": "u2i-PJIKqOpqbkqzeWcQ~L0ZOw",
        "user_id": "94235311",
        "item_id": "1768287444",
        "handles": ["avito:141906442"],
    }
    assert item.data["item_id"] == "1768287444"
    assert item.data["text"].startswith("Здравствуйте! Диван")
    assert item.occurred_at == datetime.fromtimestamp(1764201000, tz=UTC)
    assert item.summary.startswith("Avito: Здравствуйте!")


def test_image_and_location_are_summarised():
    (image,) = handle(FIXTURES["image"]).items
    assert image.data["attachments"] == [
        {"type": "image", "url": "https://img.k.avito.ru/chat/1280x960/5083651369.3e798a9b.jpg"}
    ]
    assert image.summary == "Avito: [image]"
    (loc,) = handle(FIXTURES["location"]).items
    assert loc.data["location"] == {"lat": 55.599799, "lon": 37.603954, "text": "Москва, Варшавское шоссе"}
    assert loc.summary == "Avito: [location] Москва, Варшавское шоссе"


def test_our_own_answers_and_avitos_notices_create_nothing():
    for name in ("own_answer", "system"):
        out = handle(FIXTURES[name])
        assert out.items == () and out.discarded == "ignored"
    other = copy.deepcopy(FIXTURES["text"])
    other["payload"]["type"] = "chat_updated"
    assert handle(other).discarded == "ignored"


def test_a_message_for_another_account_is_ignored():
    doc = copy.deepcopy(FIXTURES["text"])
    doc["payload"]["value"]["user_id"] = 111
    assert handle(doc).discarded == "ignored"


@pytest.mark.parametrize("query", ["", "token=wrong", "token="])
def test_a_wrong_or_missing_url_token_is_401(query: str):
    with pytest.raises(HookError) as info:
        handle(FIXTURES["text"], query=query)
    assert info.value.status == 401


def test_the_token_may_come_as_a_header():
    out = handle(FIXTURES["text"], query="", headers={"x-crm-token": "hook-token-1"})
    assert len(out.items) == 1


def test_without_a_token_the_hook_is_open_and_health_says_so():
    assert len(handle(FIXTURES["text"], ch=channel(token=None), query="").items) == 1
    assert auth_health("avito", ["client_id", "client_secret"])["unauthenticated"] is True
    assert auth_health("avito", ["client_id", "client_secret", "token"])["unauthenticated"] is False


def test_malformed_payloads():
    with pytest.raises(HookError) as info:
        handle({"payload": {"type": "message", "value": {"chat_id": "x"}}})
    assert info.value.status == 422
    assert {"payload.value.id", "payload.value.author_id"} <= set(info.value.errors)
    with pytest.raises(HookError) as info:
        handle({"id": "x"})
    assert info.value.status == 422 and "payload" in info.value.errors


def test_hostile_variations_never_crash():
    for name in ("text", "image", "location"):
        for doc in mutations(FIXTURES[name], random.Random(name), 200):
            try:
                out = handle(doc)
            except HookError as exc:
                assert exc.status in (400, 415, 422)
                continue
            for item in out.items:
                json.dumps(item.data)
                assert item.thread is not None and item.thread.key.startswith("chat:")
