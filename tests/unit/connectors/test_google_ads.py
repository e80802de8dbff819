"""Google Ads lead form webhooks: google_key, is_test, column mapping, idempotency."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.adapters.google_ads import ADAPTER, GoogleAdsAdapter
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "forms"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def channel(key: str | None = "g00gle-k3y") -> ChannelView:
    return ChannelView(
        id="ga1",
        tenant_id="t1",
        kind="google_ads",
        config={},
        secrets={"key": key} if key else {},
    )


def request(body: bytes, ctype: str = "application/json") -> RawRequest:
    return RawRequest("POST", "https://crm.example.com/hooks/ga1", "", "", {"content-type": ctype}, body)


def lead(**changes) -> bytes:
    doc = json.loads((FIXTURES / "google_ads_lead.json").read_text())
    doc.update(changes)
    return json.dumps(doc).encode()


def error(body: bytes, ch: ChannelView | None = None, ctype="application/json") -> HookError:
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch or channel(), request(body, ctype), NOW)
    return info.value


def test_adapter_kind():
    assert isinstance(ADAPTER, GoogleAdsAdapter) and ADAPTER.kind == "google_ads"


def test_lead_is_captured():
    out = ADAPTER.handle(channel(), request(lead()), NOW)
    assert out.response.status == 200 and out.response.body == b"{}"
    assert out.response.content_type == "application/json"
    (item,) = out.items
    assert item.kind == "ad_lead" and item.direction == "in"
    assert item.idempotency_key.startswith("google_ads:TeSter-123-")
    assert item.sender.name == "FirstName LastName"
    assert item.sender.phones == ("+16505550123",)
    assert item.sender.emails == ("test@example.com",)
    assert item.utm == {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "50000000000"}
    assert item.data["fields"]["What is your budget?"] == "1000-5000"
    assert item.data["gcl_id"].startswith("TeSter-123")
    assert item.data["form_id"] == "40000000000"
    assert item.occurred_at == NOW


def test_wrong_or_missing_key_is_401():
    assert error(lead(google_key="nope")).status == 401
    assert error(lead(google_key=None)).status == 401
    assert error(lead(), channel(key=None)).status == 401


def test_is_test_lead_is_accepted_and_discarded():
    out = ADAPTER.handle(channel(), request(lead(is_test=True)), NOW)
    assert out.response.status == 200 and out.response.body == b"{}"
    assert out.discarded == "test" and out.items == ()


def test_test_lead_with_wrong_key_is_still_401():
    assert error(lead(is_test=True, google_key="x")).status == 401


def test_duplicate_same_key():
    a = ADAPTER.handle(channel(), request(lead()), NOW).items[0]
    b = ADAPTER.handle(channel(), request(lead()), NOW).items[0]
    assert a.idempotency_key == b.idempotency_key


def test_first_and_last_name_and_work_contacts():
    cols = [
        {"column_id": "FIRST_NAME", "string_value": "Анна"},
        {"column_id": "LAST_NAME", "string_value": "Ким"},
        {"column_id": "WORK_PHONE", "string_value": "8 (812) 000-11-22"},
        {"column_id": "WORK_EMAIL", "string_value": "anna@corp.ru"},
    ]
    (item,) = ADAPTER.handle(channel(), request(lead(user_column_data=cols)), NOW).items
    assert item.sender.name == "Анна Ким"
    assert item.sender.phones == ("8 (812) 000-11-22",)
    assert item.sender.emails == ("anna@corp.ru",)
    assert item.data["fields"]["FIRST_NAME"] == "Анна"


def test_malformed_and_invalid():
    assert error(b'{"lead_id": "x", ').status == 400
    assert error(b"lead_id=1", ctype="application/x-www-form-urlencoded").status == 415
    err = error(lead(lead_id=None))
    assert err.status == 422 and "lead_id" in err.errors
    err = error(lead(user_column_data="nope"))
    assert err.status == 422 and "user_column_data" in err.errors
    err = error(lead(user_column_data=[{"column_id": "CITY", "string_value": "Paris"}]))
    assert err.status == 422 and "contact" in err.errors


def test_hostile_columns_give_clean_record():
    cols = [
        "junk",
        {"column_id": None, "string_value": None},
        {"column_id": "FULL_NAME", "string_value": "<b>X</b>\u0000"},
        {"column_id": "PHONE_NUMBER", "string_value": "9" * 300},
    ]
    (item,) = ADAPTER.handle(channel(), request(lead(user_column_data=cols)), NOW).items
    assert item.sender.name == "<b>X</b>"
    assert item.sender.phones == ()


def test_mutated_payloads_give_a_hook_error_or_a_clean_record():
    def run(body):
        return ADAPTER.handle(channel(), request(body), NOW)

    for doc in mutations(json.loads(lead()), random.Random(42), 300):
        try:
            out = run(json.dumps(doc).encode())
        except HookError as exc:
            assert exc.status in (400, 401, 415, 422)
            continue
        for item in out.items:
            assert item.occurred_at.tzinfo is not None
            json.dumps(item.data)
            assert all(isinstance(v, str) for v in item.utm.values())
