"""Yandex Forms: token check, the full answer object, flat and JSON-RPC bodies."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.adapters.yandex_forms import ADAPTER, YandexFormsAdapter
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "forms"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def channel(secrets: dict | None = None) -> ChannelView:
    return ChannelView(id="ya1", tenant_id="t1", kind="yandex_forms", config={}, secrets=secrets or {})


def request(body: bytes, headers: dict | None = None, query: str = "", ctype="application/json"):
    h = {"content-type": ctype} | {k.lower(): v for k, v in (headers or {}).items()}
    return RawRequest("POST", "https://crm.example.com/hooks/ya1", "", query, h, body)


def answer() -> bytes:
    return (FIXTURES / "yandex_answer.json").read_bytes()


def test_adapter_kind():
    assert isinstance(ADAPTER, YandexFormsAdapter) and ADAPTER.kind == "yandex_forms"


def test_answer_object_is_mapped_by_label_and_answer_type():
    out = ADAPTER.handle(channel(), request(answer()), NOW)
    assert out.response.status == 200
    (item,) = out.items
    assert item.kind == "form"
    assert item.sender.name == "Алексей"
    assert item.sender.phones == ("8 (495) 123-45-67",)
    assert item.sender.emails == ("alexey@example.ru",)
    assert item.data["fields"]["Услуги"] == "Доставка, Монтаж"
    assert item.idempotency_key == "yandex_forms:ya1:1873401234"
    assert item.occurred_at == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
    assert item.summary == "Form submission: Yandex Forms"


def test_flat_body_maps_like_generic_form_with_utm():
    body = json.dumps({"Имя": "Пётр", "Телефон": "+7 900 000-00-00", "utm_source": "yandex"})
    (item,) = ADAPTER.handle(channel(), request(body.encode()), NOW).items
    assert item.sender.name == "Пётр"
    assert item.sender.phones == ("+7 900 000-00-00",)
    assert item.utm == {"utm_source": "yandex"}


def test_jsonrpc_envelope_params_are_the_answers():
    body = json.dumps({"jsonrpc": "2.0", "method": "lead", "id": 1, "params": {"email": "a@b.ru"}})
    (item,) = ADAPTER.handle(channel(), request(body.encode()), NOW).items
    assert item.sender.emails == ("a@b.ru",)


def test_token_required_when_set():
    ch = channel({"token": "t0k"})
    assert ADAPTER.handle(ch, request(answer(), {"X-CRM-Token": "t0k"}), NOW).items
    assert ADAPTER.handle(ch, request(answer(), query="token=t0k"), NOW).items
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch, request(answer(), {"X-CRM-Token": "bad"}), NOW)
    assert info.value.status == 401


def test_duplicate_same_key_and_malformed():
    a = ADAPTER.handle(channel(), request(answer()), NOW).items[0]
    b = ADAPTER.handle(channel(), request(answer()), NOW).items[0]
    assert a.idempotency_key == b.idempotency_key
    for body, ctype, status in [
        (b'{"answer": {', "application/json", 400),
        (b"[]", "application/json", 400),
        (b"a=b", "application/x-www-form-urlencoded", 415),
        (b'{"answer": {"data": {}}}', "application/json", 422),
    ]:
        with pytest.raises(HookError) as info:
            ADAPTER.handle(channel(), request(body, ctype=ctype), NOW)
        assert info.value.status == status


def test_hostile_answer_entries_do_not_crash():
    body = json.dumps(
        {
            "answer": {
                "id": "x",
                "data": {
                    "a": {"value": "Ivan", "question": {"label": "Имя"}},
                    "b": "scalar entry",
                    "c": {"value": {"deep": [1, 2]}, "question": "not an object"},
                    "d": {"value": None, "question": {"label": {"en": "Note"}}},
                },
            }
        }
    ).encode()
    (item,) = ADAPTER.handle(channel(), request(body), NOW).items
    assert item.sender.name == "Ivan"
    assert item.data["fields"]["Note"] == ""


def test_mutated_payloads_give_a_hook_error_or_a_clean_record():
    def run(body):
        return ADAPTER.handle(channel(), request(body), NOW)

    for doc in mutations(json.loads(answer()), random.Random(42), 300):
        try:
            out = run(json.dumps(doc).encode())
        except HookError as exc:
            assert exc.status in (400, 401, 415, 422)
            continue
        for item in out.items:
            assert item.occurred_at.tzinfo is not None
            json.dumps(item.data)
            assert all(isinstance(v, str) for v in item.utm.values())
