"""Telegram bot webhook updates → message interactions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.connectors.adapters.base import ChannelView, HookError, HookOutcome, RawRequest
from services.connectors.adapters.telegram import ADAPTER, TelegramAdapter
from tests.support.fuzz import mutate_tree

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "telephony" / "telegram.json").read_text("utf-8")
)
TOKEN = "s3cr3t_T0ken-value"
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
CHANNEL = ChannelView("ch_tg", "t1", "telegram", {}, {"bot_token": "1:AA", "secret_token": TOKEN})


def post(
    update: Any,
    *,
    secret: str | None = TOKEN,
    channel: ChannelView = CHANNEL,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> HookOutcome:
    headers = {"content-type": content_type}
    if secret is not None:
        headers["x-telegram-bot-api-secret-token"] = secret
    raw = body if body is not None else json.dumps(update, ensure_ascii=False).encode()
    req = RawRequest("POST", "https://crm.example.com/hooks/ch_tg", "", "", headers, raw)
    return ADAPTER.handle(channel, req, NOW)


def test_adapter_declares_kind() -> None:
    assert isinstance(ADAPTER, TelegramAdapter) and ADAPTER.kind == "telegram"


def test_text_message_becomes_inbound_message() -> None:
    outcome = post(FIXTURES["text_message"])
    assert outcome.response.status == 200
    (item,) = outcome.items
    assert item.kind == "message" and item.direction == "in"
    assert item.idempotency_key == "telegram:815934001"
    assert item.sender.name == "Иван Петров"
    assert item.sender.phones == ()
    assert item.occurred_at == datetime.fromtimestamp(1795874590, tz=UTC)
    assert item.data == {
        "text": "Здравствуйте! Сколько стоит доставка?",
        "chat_id": 123456789,
        "username": "ivan_petrov",
        "message_id": 17,
    }
    assert item.summary == "Telegram message: Здравствуйте! Сколько стоит доставка?"


def test_shared_contact_gives_phone() -> None:
    (item,) = post(FIXTURES["contact_shared"]).items
    assert item.sender.phones == ("79161234567",)
    assert item.summary == "Telegram message: contact shared"


def test_same_update_twice_has_same_idempotency_key() -> None:
    a = post(FIXTURES["text_message"]).items[0]
    b = post(FIXTURES["text_message"]).items[0]
    assert a.idempotency_key == b.idempotency_key


def test_edited_message_creates_nothing() -> None:
    outcome = post(FIXTURES["edited_message"])
    assert outcome.items == () and outcome.discarded == "ignored"
    assert outcome.response.status == 200


def test_bot_message_is_discarded() -> None:
    outcome = post(FIXTURES["bot_message"])
    assert outcome.items == () and outcome.discarded == "ignored"


def test_wrong_secret_token_is_401() -> None:
    with pytest.raises(HookError) as err:
        post(FIXTURES["text_message"], secret="guess")
    assert err.value.status == 401


def test_missing_secret_token_is_401() -> None:
    with pytest.raises(HookError) as err:
        post(FIXTURES["text_message"], secret=None)
    assert err.value.status == 401


def test_no_secret_configured_accepts_without_header() -> None:
    channel = ChannelView("c", "t", "telegram", {}, {"bot_token": "1:AA"})
    (item,) = post(FIXTURES["text_message"], secret=None, channel=channel).items
    assert item.idempotency_key == "telegram:815934001"


def test_form_body_is_415() -> None:
    with pytest.raises(HookError) as err:
        post(None, body=b"update_id=1", content_type="application/x-www-form-urlencoded")
    assert err.value.status == 415


def test_truncated_json_is_400() -> None:
    with pytest.raises(HookError) as err:
        post(None, body='{"update_id": 815934001, "message": {"text": "Здр'.encode())
    assert err.value.status == 400


def test_missing_update_id_is_422() -> None:
    with pytest.raises(HookError) as err:
        post({"message": FIXTURES["text_message"]["message"]})
    assert err.value.status == 422 and "update_id" in err.value.errors


def test_message_without_chat_or_date_is_422() -> None:
    message = {k: v for k, v in FIXTURES["text_message"]["message"].items() if k not in ("chat", "date")}
    with pytest.raises(HookError) as err:
        post({"update_id": 5, "message": message})
    assert err.value.status == 422
    assert {"message.chat.id", "message.date"} <= set(err.value.errors)


def test_html_and_control_chars_stay_in_text_not_in_summary() -> None:
    text = "<script>alert('x')</script>\x00\x1b[2J Привет"
    update = json.loads(json.dumps(FIXTURES["text_message"]))
    update["message"]["text"] = text
    (item,) = post(update).items
    assert item.data["text"] == text
    assert "<" not in item.summary and "\x00" not in item.summary
    assert "Привет" in item.summary


def test_long_text_summary_is_short() -> None:
    update = json.loads(json.dumps(FIXTURES["text_message"]))
    update["message"]["text"] = "слово " * 1000
    (item,) = post(update).items
    assert len(item.summary) < 130


HOSTILE: list[Any] = [
    None,
    True,
    -1,
    10**40,
    1.5,
    -1e308,
    "",
    "<script>alert(1)</script>",
    "\x00\x1f\x7f\u202e",
    "9" * 5000,
    [],
    {},
    [None, {"a": 1}],
    {"phone_number": {"x": []}, "is_bot": "yes"},
]


def mutate(obj: dict[str, Any], rng: Any) -> dict[str, Any]:
    return mutate_tree(obj, rng, HOSTILE, descend=0.6)


@pytest.mark.parametrize("name", [n for n in FIXTURES if not n.startswith("_")])
def test_hostile_payloads_never_raise_anything_but_hook_errors(name: str) -> None:
    import random

    rng = random.Random(name)
    for _ in range(200):
        try:
            outcome = post(mutate(FIXTURES[name], rng))
        except HookError as exc:
            assert exc.status in (400, 422)
            continue
        for item in outcome.items:
            assert item.occurred_at.utcoffset() == timedelta(0)
            assert "<" not in item.summary
            assert item.idempotency_key.startswith("telegram:")


def test_lone_surrogate_is_400() -> None:
    with pytest.raises(HookError) as err:
        post(None, body=b'{"update_id": 1, "message": {"text": "\\udc00"}}')
    assert err.value.status == 400
