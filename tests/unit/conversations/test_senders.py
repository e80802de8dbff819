"""The Telegram and SMTP senders against the providers' documented answers (HTTP faked with
httpx.MockTransport; the real servers are in the e2e tests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from services.connectors.adapters.base import ChannelView
from services.connectors.senders import get_sender, resend_safe
from services.connectors.senders.base import OutboundMessage, SendFailed
from services.connectors.senders.smtp import build_message
from services.connectors.senders.telegram import SENDER as TELEGRAM

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CHANNEL = ChannelView("ch", "t", "telegram", {"api_base_url": "https://tg.example"}, {"bot_token": "1:AA"})
MSG = OutboundMessage("k1", "c1", "chat:5", {"chat_id": 5}, "Привет")


def client(status: int, body: object, seen: list[httpx.Request] | None = None) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_send_message_posts_chat_and_text_and_takes_the_message_id() -> None:
    seen: list[httpx.Request] = []
    answer = {"ok": True, "result": {"message_id": 77, "chat": {"id": 5}, "date": 1, "text": "Привет"}}
    result = await TELEGRAM.send(CHANNEL, MSG, client(200, answer, seen), NOW)
    assert result.provider_message_id == "77" and result.status == "sent"
    assert str(seen[0].url) == "https://tg.example/bot1:AA/sendMessage"
    assert json.loads(seen[0].content) == {"chat_id": 5, "text": "Привет"}


async def test_flood_limit_is_retryable_after_the_given_seconds() -> None:
    answer = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    with pytest.raises(SendFailed) as info:
        await TELEGRAM.send(CHANNEL, MSG, client(429, answer), NOW)
    assert info.value.retryable and info.value.retry_after_s == 7


async def test_a_refusal_is_final_with_telegrams_description() -> None:
    answer = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
    with pytest.raises(SendFailed) as info:
        await TELEGRAM.send(CHANNEL, MSG, client(403, answer), NOW)
    assert (
        not info.value.retryable
        and info.value.reason == "Telegram 403: Forbidden: bot was blocked by the user"
    )


async def test_no_bot_token_is_a_final_failure() -> None:
    channel = ChannelView("ch", "t", "telegram", {}, {})
    with pytest.raises(SendFailed, match="bot_token"):
        await TELEGRAM.send(channel, MSG, client(200, {}), NOW)


def test_registry_finds_senders_by_kind_and_says_which_may_be_repeated() -> None:
    telegram, smtp = get_sender("telegram"), get_sender("imap")
    assert telegram is not None and smtp is not None
    assert not resend_safe(telegram) and resend_safe(smtp)
    assert get_sender("form") is None and get_sender("../x") is None


def test_email_is_threaded_with_a_message_id_fixed_by_the_key() -> None:
    address = {
        "to": ["anna@client.example"],
        "subject": "Вопрос",
        "in_reply_to": "<q1@c>",
        "references": ["<r0@c>", "<q1@c>"],
    }
    message = OutboundMessage("k1", "c1", "mail:<r0@c>", address, "Ответ", subject="Re: Вопрос")
    config = {"address": "Sales@Corp.example", "username": "login"}
    one, two = build_message(config, message, NOW), build_message(config, message, NOW)
    assert one["Message-ID"] == two["Message-ID"] and one["Message-ID"].endswith("@corp.example>")
    assert one["In-Reply-To"] == "<q1@c>" and one["References"] == "<r0@c> <q1@c>"
    assert one["From"] == "sales@corp.example" and one["To"] == "anna@client.example"
    assert one["Subject"] == "Re: Вопрос" and one.get_content().strip() == "Ответ"
