"""Tilda webhooks: urlencoded fields, the test=test probe, the API key, TILDAUTM attribution."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest

from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.adapters.tilda import ADAPTER, TildaAdapter

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "forms"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def channel(config: dict | None = None, secrets: dict | None = None) -> ChannelView:
    return ChannelView(id="tl1", tenant_id="t1", kind="tilda", config=config or {}, secrets=secrets or {})


def request(
    body: bytes,
    content_type: str = "application/x-www-form-urlencoded",
    headers: dict[str, str] | None = None,
) -> RawRequest:
    h = {"content-type": content_type} | {k.lower(): v for k, v in (headers or {}).items()}
    return RawRequest("POST", "https://crm.example.com/hooks/tl1", "", "", h, body)


def submission() -> bytes:
    return (FIXTURES / "tilda_submission.txt").read_bytes().strip()


def test_adapter_kind():
    assert isinstance(ADAPTER, TildaAdapter) and ADAPTER.kind == "tilda"


def test_submission_is_captured_with_contact_and_tildautm_utm():
    out = ADAPTER.handle(channel(), request(submission()), NOW)
    assert out.response.status == 200 and out.response.body == b"ok"
    (item,) = out.items
    assert item.kind == "form" and item.direction == "in"
    assert item.sender.name == "Мария Иванова"
    assert item.sender.phones == ("+7 (916) 555-12-34",)
    assert item.sender.emails == ("maria@example.ru",)
    assert item.idempotency_key == "tilda:tl1:8612345:4123456789"
    assert item.utm == {
        "utm_source": "yandex",
        "utm_medium": "cpc",
        "utm_campaign": "autumn_sale",
        "utm_term": "купить",
    }
    assert item.data["utm"] == item.utm
    assert item.data["fields"]["Textarea"] == "Хочу консультацию"
    assert item.data["form_id"] == "form512345678"
    assert item.summary == "Form submission: Заявка на консультацию"


def test_utm_hidden_fields_win_over_cookie():
    body = urlencode({"Name": "A", "utm_source": "vk", "COOKIES": "TILDAUTM=utm_source%3Dx"})
    (item,) = ADAPTER.handle(channel(), request(body.encode()), NOW).items
    assert item.utm == {"utm_source": "vk"}


def test_probe_test_test_answers_ok_and_creates_nothing():
    out = ADAPTER.handle(channel(secrets={"token": "k"}), request(b"test=test"), NOW)
    assert out.response.status == 200 and out.response.body == b"ok"
    assert out.discarded == "test" and out.items == ()


def test_api_key_in_body_field_or_header():
    ch = channel(secrets={"token": "k3y"})
    body = submission() + b"&api_key=k3y"
    (item,) = ADAPTER.handle(ch, request(body), NOW).items
    assert "api_key" not in item.data["fields"]  # the secret is not stored
    assert ADAPTER.handle(ch, request(submission(), headers={"api-key": "k3y"}), NOW).items
    custom = channel(config={"api_key_header": "X-Tilda-Key"}, secrets={"token": "k3y"})
    assert ADAPTER.handle(custom, request(submission(), headers={"X-Tilda-Key": "k3y"}), NOW).items


def test_wrong_or_missing_api_key_is_401():
    ch = channel(secrets={"token": "k3y"})
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch, request(submission() + b"&api_key=nope"), NOW)
    assert info.value.status == 401
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch, request(submission()), NOW)
    assert info.value.status == 401


def test_duplicate_delivery_has_same_key():
    a = ADAPTER.handle(channel(), request(submission()), NOW).items[0]
    b = ADAPTER.handle(channel(), request(submission()), NOW).items[0]
    assert a.idempotency_key == b.idempotency_key


def test_wrong_content_type_is_415_and_no_contact_is_422():
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), request(b"Name=A", "text/plain"), NOW)
    assert info.value.status == 415
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), request(b"Textarea=hello&tranid=1:2"), NOW)
    assert info.value.status == 422 and "contact" in info.value.errors


def test_json_variant_is_accepted():
    body = b'{"Name": "Ivan", "Phone": "89161234567", "tranid": "1:2", "formid": "form1"}'
    (item,) = ADAPTER.handle(channel(), request(body, "application/json"), NOW).items
    assert item.sender.phones == ("89161234567",)
    assert item.idempotency_key == "tilda:tl1:1:2"


def test_probe_with_a_wrong_key_is_401():
    ch = channel(secrets={"token": "k3y"})
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch, request(b"test=test", headers={"api-key": "nope"}), NOW)
    assert info.value.status == 401
    out = ADAPTER.handle(ch, request(b"test=test&api_key=k3y"), NOW)
    assert out.discarded == "test"


def test_honeypot_applies_and_answers_ok():
    ch = channel(config={"honeypot_field": "hp"})
    out = ADAPTER.handle(ch, request(submission() + b"&hp=http%3A%2F%2Fspam"), NOW)
    assert out.response.body == b"ok" and out.discarded == "spam" and out.items == ()
