"""Typeform webhooks: base64 HMAC signature, answers by type, hidden UTM fields, event_id key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.adapters.typeform import ADAPTER, TypeformAdapter
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "forms"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SECRET = "tf-secret"


def channel(secrets: dict | None = None) -> ChannelView:
    return ChannelView(
        id="tf1",
        tenant_id="t1",
        kind="typeform",
        config={},
        secrets={"secret": SECRET} if secrets is None else secrets,
    )


def sign(body: bytes, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def request(body: bytes, signature: str | None = None, ctype: str = "application/json"):
    headers = {"content-type": ctype}
    if signature is not None:
        headers["typeform-signature"] = signature
    return RawRequest("POST", "https://crm.example.com/hooks/tf1", "", "", headers, body)


def payload() -> bytes:
    return (FIXTURES / "typeform_response.json").read_bytes()


def handle(body: bytes):
    return ADAPTER.handle(channel(), request(body, sign(body)), NOW)


def test_adapter_kind():
    assert isinstance(ADAPTER, TypeformAdapter) and ADAPTER.kind == "typeform"


def test_signed_response_is_captured():
    out = handle(payload())
    assert out.response.status == 200
    (item,) = out.items
    assert item.kind == "form" and item.direction == "in"
    assert item.idempotency_key == "typeform:LtWXD3crgy"
    assert item.sender.name == "Laura"
    assert item.sender.emails == ("laura@example.com",)
    assert item.sender.phones == ("+15555550142",)
    assert item.utm == {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "jan"}
    assert item.data["utm"] == item.utm
    fields = item.data["fields"]
    assert fields["readable_ref_picture_choice"] == "London, Sydney"
    assert fields["readable_ref_yes_no"] == "true"
    assert fields["readable_ref_date"] == "2005-10-15"
    assert fields["hidden.utm_source"] == "newsletter"
    assert item.occurred_at == datetime(2018, 1, 18, 18, 17, 2, tzinfo=UTC)
    assert item.summary == "Form submission: Webhooks example"


def test_bad_or_missing_signature_is_401():
    body = payload()
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), request(body, sign(body, "other")), NOW)
    assert info.value.status == 401
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), request(body), NOW)
    assert info.value.status == 401
    # A hex digest (the wrong encoding) is refused too.
    hexsig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    with pytest.raises(HookError):
        ADAPTER.handle(channel(), request(body, hexsig), NOW)


def test_tampered_body_is_401():
    body = payload()
    sig = sign(body)
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), request(body.replace(b"Laura", b"Mallory"), sig), NOW)
    assert info.value.status == 401


def test_duplicate_delivery_same_key():
    assert handle(payload()).items[0].idempotency_key == handle(payload()).items[0].idempotency_key


def test_other_event_types_are_ignored():
    body = json.dumps({"event_id": "x", "event_type": "form_response_partial"}).encode()
    out = handle(body)
    assert out.discarded == "ignored" and out.items == () and out.response.status == 200


def test_malformed_requests():
    with pytest.raises(HookError) as info:
        handle(b'{"event_id": "x", "event_type": "form_re')
    assert info.value.status == 400
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), request(b"a=b", sign(b"a=b"), "text/plain"), NOW)
    assert info.value.status == 415
    body = json.dumps({"event_id": "x", "event_type": "form_response", "form_response": []})
    with pytest.raises(HookError) as info:
        handle(body.encode())
    assert info.value.status == 422 and "form_response" in info.value.errors
    empty = {"event_id": "x", "event_type": "form_response", "form_response": {"answers": []}}
    with pytest.raises(HookError) as info:
        handle(json.dumps(empty).encode())
    assert info.value.status == 422 and "contact" in info.value.errors


def test_hostile_answers_do_not_crash():
    doc = json.loads(payload())
    doc["form_response"]["answers"].extend(
        [
            "not an object",
            {"type": "text", "text": {"nested": ["x"]}, "field": {"ref": "odd"}},
            {"type": None, "field": None},
            {"type": "choice", "choice": "str", "field": {"ref": "c"}},
        ]
    )
    (item,) = handle(json.dumps(doc).encode()).items
    assert item.sender.emails == ("laura@example.com",)
    assert "odd" in item.data["fields"]


def test_unsigned_accepted_only_without_secret():
    body = payload()
    out = ADAPTER.handle(channel(secrets={}), request(body), NOW)
    assert len(out.items) == 1


def test_mutated_payloads_give_a_hook_error_or_a_clean_record():
    def run(body):
        return handle(body)

    for doc in mutations(json.loads(payload()), random.Random(42), 300):
        try:
            out = run(json.dumps(doc).encode())
        except HookError as exc:
            assert exc.status in (400, 401, 415, 422)
            continue
        for item in out.items:
            assert item.occurred_at.tzinfo is not None
            json.dumps(item.data)
            assert all(isinstance(v, str) for v in item.utm.values())
