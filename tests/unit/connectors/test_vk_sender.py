"""The VK sender against a local stand-in of api.vk.com: messages.send's form, the deterministic
random_id, and VK's error codes mapped to retryable or not."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.connectors.adapters.base import ChannelView
from services.connectors.senders.base import OutboundMessage, SendFailed
from services.connectors.senders.vk import SENDER, random_id_for
from tests.support.provider_api import ProviderApi, guarded_client, provider_api

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "messengers" / "vk.json").read_text()
)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def channel(api: ProviderApi, **config: Any) -> ChannelView:
    return ChannelView(
        id="vk1",
        tenant_id="t1",
        kind="vk",
        config={"api_base_url": api.url, **config},
        secrets={"secret": "s", "confirmation": "c", "access_token": "vk1.a.community-token"},
    )


def message(key: str = "outbox:msg-1", text: str = "Доставка завтра до 18:00.") -> OutboundMessage:
    return OutboundMessage(
        idempotency_key=key,
        conversation_id="c1",
        thread_key="peer:1234567",
        address={"peer_id": 1234567},
        text=text,
    )


async def send(api: ProviderApi, msg: OutboundMessage | None = None, **config: Any):
    async with guarded_client() as http:
        return await SENDER.send(channel(api, **config), msg or message(), http, NOW)


async def failed(api: ProviderApi) -> SendFailed:
    with pytest.raises(SendFailed) as info:
        await send(api)
    return info.value


def test_random_id_is_a_stable_positive_int32_per_key():
    a, b = random_id_for("outbox:msg-1"), random_id_for("outbox:msg-2")
    assert a == random_id_for("outbox:msg-1") and a != b
    assert all(0 < x < 2**31 for x in (a, b))


async def test_messages_send_gets_the_form_vk_documents():
    with provider_api() as api:
        api.answer(200, FIXTURES["messages_send_ok"])
        result = await send(api)
    assert result.provider_message_id == "5322"
    assert result.extra == {"random_id": random_id_for("outbox:msg-1")}
    (req,) = api.requests
    assert req.method == "POST" and req.path == "/method/messages.send"
    assert req.query == {}  # the token is in the body, never in the URL
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.form() == {
        "access_token": "vk1.a.community-token",
        "v": "5.199",
        "peer_id": "1234567",
        "message": "Доставка завтра до 18:00.",
        "random_id": str(random_id_for("outbox:msg-1")),
    }


async def test_a_repeat_of_the_same_send_carries_the_same_random_id():
    with provider_api() as api:
        api.answer(200, {"response": 1})
        api.answer(200, {"response": 1})
        await send(api)
        await send(api, api_version="5.131")
    first, second = (r.form() for r in api.requests)
    assert first["random_id"] == second["random_id"] and second["v"] == "5.131"


@pytest.mark.parametrize(("name", "wait"), [("error_too_many", 1.0), ("error_flood", 60.0)])
async def test_rate_and_flood_limits_are_retried_later(name: str, wait: float):
    with provider_api() as api:
        api.answer(200, FIXTURES[name])
        err = await failed(api)
    assert err.retryable is True and err.retry_after_s == wait


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("error_no_permission", "not allowed messages"),
        ("error_privacy", "privacy settings"),
        ("error_auth", "token"),
    ],
)
async def test_permission_privacy_and_auth_errors_are_final_with_a_clear_reason(name: str, words: str):
    with provider_api() as api:
        api.answer(200, FIXTURES[name])
        err = await failed(api)
    assert err.retryable is False and words in err.reason
    assert str(FIXTURES[name]["error"]["error_code"]) in err.reason


async def test_other_errors_are_final_with_vks_message():
    with provider_api() as api:
        api.answer(
            200, {"error": {"error_code": 100, "error_msg": "One of the parameters specified was missing"}}
        )
        err = await failed(api)
    assert err.retryable is False and "parameters specified was missing" in err.reason


async def test_server_errors_are_retryable():
    with provider_api() as api:
        api.answer(502, b"<html>Bad Gateway</html>")
        err = await failed(api)
    assert err.retryable is True


async def test_no_token_is_final_and_calls_nothing():
    with provider_api() as api:
        ch = channel(api)
        bare = ChannelView(ch.id, ch.tenant_id, ch.kind, ch.config, {"secret": "s"})
        async with guarded_client() as http:
            with pytest.raises(SendFailed) as info:
                await SENDER.send(bare, message(), http, NOW)
    assert "secrets.access_token" in info.value.reason and not info.value.retryable
    assert api.requests == []


async def test_no_answer_is_retryable_because_vk_drops_a_repeat():
    with provider_api() as api:
        api.answer(200, {"response": 1}, delay_s=1.0)
        async with guarded_client(timeout_s=0.3) as http:
            with pytest.raises(SendFailed) as info:
                await SENDER.send(channel(api), message(), http, NOW)
    assert info.value.retryable is True
    assert SENDER.resend_safe is True
