"""The Avito sender against a local stand-in of api.avito.ru: the client_credentials token (cached
until it expires), the chat message request, and the error mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.connectors.adapters.base import ChannelView
from services.connectors.senders.avito import AvitoSender
from services.connectors.senders.base import OutboundMessage, SendFailed
from tests.support.provider_api import Answer, ProviderApi, Seen, guarded_client, provider_api

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "messengers" / "avito.json").read_text()
)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CHAT = "u2i-PJIKqOpqbkqzeWcQ~L0ZOw"


def avito(seen: Seen) -> Answer:
    """Avito as documented: a token for the right credentials, then messages for a bearer."""
    if seen.path == "/token":
        form = seen.form()
        if form.get("client_id") == "cid" and form.get("client_secret") == "csecret":
            return Answer(200, FIXTURES["token_ok"])
        return Answer(400, {"error": "invalid_client", "error_description": "client authentication failed"})
    if seen.headers.get("authorization") != f"Bearer {FIXTURES['token_ok']['access_token']}":
        return Answer(401, {"error": {"code": 401, "message": "Unauthorized"}})
    return Answer(200, FIXTURES["send_ok"])


def channel(api: ProviderApi, secret: str = "csecret") -> ChannelView:
    return ChannelView(
        "av1",
        "t1",
        "avito",
        {"user_id": 94235311, "api_base_url": api.url},
        {"client_id": "cid", "client_secret": secret},
    )


def message(text: str = "Да, продаётся.") -> OutboundMessage:
    return OutboundMessage(
        idempotency_key="outbox:1",
        conversation_id="c1",
        thread_key=f"chat:{CHAT}",
        address={"chat_id": CHAT, "user_id": "94235311", "item_id": "1768287444"},
        text=text,
    )


async def test_token_then_message_as_avito_documents():
    sender = AvitoSender()
    with provider_api(avito) as api:
        async with guarded_client() as http:
            result = await sender.send(channel(api), message(), http, NOW)
    assert result.provider_message_id == "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
    token, sent = api.requests
    assert token.method == "POST" and token.path == "/token"
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token.form() == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": "csecret",
    }
    assert sent.path == f"/messenger/v1/accounts/94235311/chats/{CHAT}/messages"
    assert sent.headers["authorization"] == "Bearer kJrbq2AxTaK3XbNnF9o2fwAAAZOdummy"
    assert sent.json() == {"message": {"text": "Да, продаётся."}, "type": "text"}


async def test_the_token_is_reused_until_it_expires():
    sender = AvitoSender()
    with provider_api(avito) as api:
        async with guarded_client() as http:
            await sender.send(channel(api), message(), http, NOW)
            await sender.send(channel(api), message(), http, NOW + timedelta(hours=23))
            assert [r.path for r in api.requests].count("/token") == 1
            await sender.send(channel(api), message(), http, NOW + timedelta(seconds=86400 - 30))
    assert [r.path for r in api.requests].count("/token") == 2


async def test_a_revoked_token_is_replaced_once():
    sender = AvitoSender()
    with provider_api(avito) as api:
        async with guarded_client() as http:
            await sender.send(channel(api), message(), http, NOW)
            api.answer(401, {"error": {"code": 401, "message": "Unauthorized"}})
            result = await sender.send(channel(api), message(), http, NOW + timedelta(minutes=5))
    assert result.provider_message_id
    assert [r.path.rsplit("/", 1)[-1] for r in api.requests] == [
        "token",
        "messages",
        "messages",
        "token",
        "messages",
    ]


async def test_wrong_credentials_are_final():
    with provider_api(avito) as api:
        async with guarded_client() as http:
            with pytest.raises(SendFailed) as info:
                await AvitoSender().send(channel(api, secret="nope"), message(), http, NOW)
    assert info.value.retryable is False
    assert "client_secret" in info.value.reason and "client authentication failed" in info.value.reason
    assert "nope" not in info.value.reason


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "wait"),
    [
        (429, {"Retry-After": "7"}, True, 7.0),
        (503, {}, True, None),
        (402, {}, False, None),
        (403, {}, False, None),
    ],
)
async def test_message_errors(status: int, headers: dict[str, str], retryable: bool, wait: Any):
    sender = AvitoSender()
    with provider_api(avito) as api:
        async with guarded_client() as http:
            await sender.token(channel(api), http, NOW)
            api.answer(status, {"error": {"code": status, "message": f"scripted {status}"}}, headers)
            with pytest.raises(SendFailed) as info:
                await sender.send(channel(api), message(), http, NOW)
    assert info.value.retryable is retryable and info.value.retry_after_s == wait
    if not retryable:
        assert f"scripted {status}" in info.value.reason


async def test_too_long_or_missing_chat_is_final_and_calls_nothing():
    with provider_api(avito) as api:
        async with guarded_client() as http:
            with pytest.raises(SendFailed) as info:
                await AvitoSender().send(channel(api), message("x" * 1001), http, NOW)
            assert "1000" in info.value.reason and not info.value.retryable
            with pytest.raises(SendFailed):
                await AvitoSender().send(
                    channel(api), OutboundMessage("k", "c", "chat:x", {}, "hi"), http, NOW
                )
    assert api.requests == []


async def test_a_hostile_chat_id_stays_one_path_segment():
    sender = AvitoSender()
    hostile = OutboundMessage(
        "k", "c1", "chat:x", {"chat_id": "../../../core/v1/accounts/self", "user_id": "94235311"}, "hi"
    )
    with provider_api(avito) as api:
        async with guarded_client() as http:
            await sender.send(channel(api), hostile, http, NOW)
    sent = api.requests[-1]
    assert sent.path.startswith("/messenger/v1/accounts/94235311/chats/") and sent.path.endswith("/messages")
    assert sent.path.count("/") == 7
