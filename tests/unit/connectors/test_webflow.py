"""Webflow form_submission webhooks: timestamped HMAC signature, replay window, field mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.adapters.webflow import ADAPTER, WebflowAdapter
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "forms"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SECRET = "2b4acfd1c5518bf03c73a4889d197d77251353857c22694bf150b9e3402ba15f"


def channel(secrets: dict | None = None) -> ChannelView:
    return ChannelView(
        id="wf1",
        tenant_id="t1",
        kind="webflow",
        config={},
        secrets={"secret": SECRET} if secrets is None else secrets,
    )


def signed(body: bytes, at: datetime = NOW, secret: str = SECRET) -> RawRequest:
    ts = str(int(at.timestamp() * 1000))
    sig = hmac.new(secret.encode(), f"{ts}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-webflow-timestamp": ts,
        "x-webflow-signature": sig,
    }
    return RawRequest("POST", "https://crm.example.com/hooks/wf1", "", "", headers, body)


def payload() -> bytes:
    return (FIXTURES / "webflow_submission.json").read_bytes()


def error(req: RawRequest, ch: ChannelView | None = None) -> HookError:
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch or channel(), req, NOW)
    return info.value


def test_adapter_kind():
    assert isinstance(ADAPTER, WebflowAdapter) and ADAPTER.kind == "webflow"


def test_documented_submission_is_captured():
    out = ADAPTER.handle(channel(), signed(payload()), NOW)
    assert out.response.status == 200
    (item,) = out.items
    assert item.kind == "form"
    assert item.idempotency_key == "webflow:6321ca84df3949bfc6752327"
    assert item.sender.name == "Zaphod Beeblebrox"
    assert item.sender.emails == ("zaphod@heartofgold.ai",)
    assert item.sender.phones == ("15550000000",)
    assert item.data["fields"]["Phone Number"] == "15550000000"
    assert item.data["form_name"] == "Contact Us"
    assert item.data["form_id"] == "65429eadebe8a9f3a30f62d0"
    assert item.occurred_at == datetime(2022, 9, 14, 12, 35, 16, 117000, tzinfo=UTC)
    assert item.summary == "Form submission: Contact Us"


def test_bad_signature_is_401():
    req = signed(payload(), secret="wrong")
    assert error(req).status == 401
    headers = dict(signed(payload()).headers)
    tampered = RawRequest("POST", "u", "", "", headers, payload().replace(b"Zaphod", b"Arthur"))
    assert error(tampered).status == 401
    unsigned = RawRequest("POST", "u", "", "", {"content-type": "application/json"}, payload())
    assert error(unsigned).status == 401


@pytest.mark.parametrize("skew", [timedelta(minutes=6), timedelta(minutes=-6), timedelta(days=1)])
def test_timestamp_outside_five_minutes_is_replay_401(skew: timedelta):
    err = error(signed(payload(), at=NOW - skew))
    assert err.status == 401 and "replay" in err.detail


def test_timestamp_inside_window_is_accepted():
    assert ADAPTER.handle(channel(), signed(payload(), at=NOW - timedelta(minutes=4)), NOW).items


def test_duplicate_same_key():
    a = ADAPTER.handle(channel(), signed(payload()), NOW).items[0]
    b = ADAPTER.handle(channel(), signed(payload(), at=NOW + timedelta(seconds=30)), NOW).items[0]
    assert a.idempotency_key == b.idempotency_key


def test_other_trigger_types_ignored():
    body = json.dumps({"triggerType": "site_publish", "payload": {}}).encode()
    out = ADAPTER.handle(channel(), signed(body), NOW)
    assert out.discarded == "ignored" and out.items == ()


def test_malformed():
    assert error(signed(b'{"triggerType": "form_sub')).status == 400
    body = json.dumps({"triggerType": "form_submission", "payload": {"data": "x"}}).encode()
    err = error(signed(body))
    assert err.status == 422 and "payload.data" in err.errors
    body = json.dumps({"triggerType": "form_submission", "payload": {"data": {"msg": "hi"}}})
    err = error(signed(body.encode()))
    assert err.status == 422 and "contact" in err.errors
    req = signed(payload())
    xml = RawRequest("POST", "u", "", "", dict(req.headers) | {"content-type": "text/xml"}, b"<a/>")
    assert error(xml, channel(secrets={})).status == 415


def test_v1_payload_is_accepted():
    body = json.dumps(
        {
            "name": "Sample Form",
            "site": "62749158efef318abc8d5a0f",
            "data": {"name": "Some One", "email": "some.one@home.com"},
            "d": "2022-09-14T12:35:16.117Z",
            "_id": "6321ca84df3949bfc6752327",
        }
    ).encode()
    (item,) = ADAPTER.handle(channel(), signed(body), NOW).items
    assert item.sender.name == "Some One"
    assert item.idempotency_key == "webflow:6321ca84df3949bfc6752327"


def test_mutated_payloads_give_a_hook_error_or_a_clean_record():
    def run(body):
        return ADAPTER.handle(channel(), signed(body), NOW)

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


@pytest.mark.parametrize("window", ["nan", "inf", -5, "abc", 10**9])
def test_insane_replay_window_config_falls_back_to_five_minutes(window):
    ch = ChannelView("wf1", "t1", "webflow", {"replay_window_s": window}, {"secret": SECRET})
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch, signed(payload(), at=NOW - timedelta(minutes=6)), NOW)
    assert info.value.status == 401
    assert ADAPTER.handle(ch, signed(payload(), at=NOW - timedelta(minutes=4)), NOW).items


def test_configured_replay_window_is_used():
    ch = ChannelView("wf1", "t1", "webflow", {"replay_window_s": 60}, {"secret": SECRET})
    with pytest.raises(HookError):
        ADAPTER.handle(ch, signed(payload(), at=NOW - timedelta(minutes=2)), NOW)
