"""Zadarma PBX notifications → call interactions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest

from services.connectors.adapters.base import ChannelView, HookError, HookOutcome, RawRequest
from services.connectors.adapters.zadarma import ADAPTER, ZadarmaAdapter

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "telephony" / "zadarma.json").read_text("utf-8")
)
SECRET = "b1c2d3e4f5a6b7c8d9e0"
URL = "https://crm.example.com/hooks/ch_zd"
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
CHANNEL = ChannelView("ch_zd", "t1", "zadarma", {}, {"api_secret": SECRET})
SIGNED = {
    "NOTIFY_START": ("caller_id", "called_did", "call_start"),
    "NOTIFY_END": ("caller_id", "called_did", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}


def sign(params: dict[str, str], secret: str = SECRET) -> str:
    """As Zadarma's PHP sample: base64_encode(hash_hmac('sha1', $string, $secret)) — hex digest."""
    string = "".join(params.get(f, "") for f in SIGNED[params["event"]])
    return base64.b64encode(
        hmac.new(secret.encode(), string.encode(), hashlib.sha1).hexdigest().encode()
    ).decode()


def post(
    params: dict[str, str],
    *,
    signature: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
    body: bytes | None = None,
    channel: ChannelView = CHANNEL,
) -> HookOutcome:
    headers = {"content-type": content_type, "signature": signature or sign(params)}
    req = RawRequest("POST", URL, "", "", headers, body if body is not None else urlencode(params).encode())
    return ADAPTER.handle(channel, req, NOW)


def status_of(exc: pytest.ExceptionInfo[HookError]) -> int:
    return exc.value.status


def test_adapter_declares_kind() -> None:
    assert isinstance(ADAPTER, ZadarmaAdapter) and ADAPTER.kind == "zadarma"


def test_zd_echo_is_answered_with_the_echo_exactly_and_not_kept() -> None:
    req = RawRequest("GET", URL + "?zd_echo=1a2B3c4D5e", "", "zd_echo=1a2B3c4D5e", {}, b"")
    outcome = ADAPTER.handle(ChannelView("c", "t", "zadarma", {}, {}), req, NOW)
    assert outcome.response.status == 200
    assert outcome.response.body == b"1a2B3c4D5e"
    assert outcome.durable is False and outcome.items == ()


def test_get_without_echo_is_400() -> None:
    with pytest.raises(HookError) as err:
        ADAPTER.handle(CHANNEL, RawRequest("GET", URL, "", "", {}, b""), NOW)
    assert status_of(err) == 400


def test_notify_start_is_ringing_inbound_call_with_empty_answer() -> None:
    outcome = post(FIXTURES["notify_start"])
    assert outcome.response.status == 200 and outcome.response.body == b""
    (item,) = outcome.items
    assert item.kind == "call" and item.direction == "in"
    assert item.subject_key == "zadarma:call:in_8e5c2f5d4b1f4a0b9a7c6d5e4f3a2b1c"
    assert item.idempotency_key == "zadarma:in_8e5c2f5d4b1f4a0b9a7c6d5e4f3a2b1c:NOTIFY_START"
    assert item.data["status"] == "ringing"
    assert item.sender.phones == ("79161234567",)
    # 17:03:10 Moscow (UTC+3) is 14:03:10 UTC
    assert item.occurred_at == datetime(2026, 11, 27, 14, 3, 10, tzinfo=UTC)


def test_notify_end_answered_carries_duration_and_recording_id() -> None:
    (item,) = post(FIXTURES["notify_end"]).items
    assert item.data["status"] == "answered"
    assert item.data["duration_s"] == 125
    assert item.data["recording_id"] == "1732716190.1234567"
    assert item.data["from"] == "79161234567" and item.data["to"] == "74951234567"
    assert item.data["call_id"] == "in_8e5c2f5d4b1f4a0b9a7c6d5e4f3a2b1c"
    assert item.summary == "Inbound call, 2 min 5 s"


@pytest.mark.parametrize(
    ("disposition", "status"),
    [
        ("answered", "answered"),
        ("no answer", "missed"),
        ("cancel", "missed"),
        ("busy", "busy"),
        ("failed", "failed"),
        ("no money", "failed"),
        ("unallocated number", "failed"),
    ],
)
def test_disposition_maps_to_status(disposition: str, status: str) -> None:
    (item,) = post(dict(FIXTURES["notify_end"], disposition=disposition)).items
    assert item.data["status"] == status


def test_cancelled_call_is_missed_inbound_call() -> None:
    (item,) = post(FIXTURES["notify_end_missed"]).items
    assert item.summary == "Missed inbound call"
    assert item.sender.phones == ("+7 (916) 000-11-22",)
    assert "recording_id" not in item.data


def test_end_before_start_share_subject_key() -> None:
    end = post(FIXTURES["notify_end"]).items[0]
    start = post(FIXTURES["notify_start"]).items[0]
    record = post(FIXTURES["notify_record"]).items[0]
    assert end.subject_key == start.subject_key == record.subject_key
    assert len({end.idempotency_key, start.idempotency_key, record.idempotency_key}) == 3


def test_duplicate_notification_has_same_idempotency_key() -> None:
    a = post(FIXTURES["notify_end"]).items[0]
    b = post(FIXTURES["notify_end"]).items[0]
    assert a.idempotency_key == b.idempotency_key


def test_outbound_call_client_is_destination() -> None:
    (start,) = post(FIXTURES["notify_out_start"]).items
    (end,) = post(FIXTURES["notify_out_end"]).items
    assert start.direction == end.direction == "out"
    assert end.sender.phones == ("89031112233",)
    assert end.data["status"] == "busy"
    assert start.subject_key == end.subject_key == "zadarma:call:out_7f6e5d4c3b2a19087f6e5d4c3b2a1908"


def test_notify_record_gives_recording_id() -> None:
    (item,) = post(FIXTURES["notify_record"]).items
    assert item.data["recording_id"] == "1732716190.1234567"
    assert "status" not in item.data


def test_timezone_is_taken_from_channel_config() -> None:
    channel = ChannelView("c", "t", "zadarma", {"timezone": "Asia/Yekaterinburg"}, {"api_secret": SECRET})
    (item,) = post(FIXTURES["notify_start"], channel=channel).items
    assert item.occurred_at == datetime(2026, 11, 27, 12, 3, 10, tzinfo=UTC)


def test_bad_signature_is_401() -> None:
    with pytest.raises(HookError) as err:
        post(FIXTURES["notify_start"], signature=sign(FIXTURES["notify_start"], "wrong-secret"))
    assert status_of(err) == 401


def test_tampered_signed_field_is_401() -> None:
    good = sign(FIXTURES["notify_end"])
    with pytest.raises(HookError) as err:
        post(dict(FIXTURES["notify_end"], caller_id="70000000000"), signature=good)
    assert status_of(err) == 401


def test_missing_secret_is_401() -> None:
    with pytest.raises(HookError) as err:
        post(FIXTURES["notify_start"], channel=ChannelView("c", "t", "zadarma", {}, {}))
    assert status_of(err) == 401


def test_json_body_is_415() -> None:
    with pytest.raises(HookError) as err:
        post(FIXTURES["notify_start"], content_type="application/json", body=b"{}")
    assert status_of(err) == 415


def test_non_utf8_body_is_400() -> None:
    with pytest.raises(HookError) as err:
        post(FIXTURES["notify_start"], body=b"event=NOTIFY_START&caller_id=%C0%AF")
    assert status_of(err) == 400


def test_missing_required_field_is_422() -> None:
    params = {k: v for k, v in FIXTURES["notify_end"].items() if k != "disposition"}
    with pytest.raises(HookError) as err:
        post(params)
    assert status_of(err) == 422 and "disposition" in err.value.errors


def test_unparseable_call_start_is_422() -> None:
    with pytest.raises(HookError) as err:
        post(dict(FIXTURES["notify_start"], call_start="yesterday <b>"))
    assert status_of(err) == 422 and "call_start" in err.value.errors


def test_missing_event_is_422() -> None:
    with pytest.raises(HookError) as err:
        post({"pbx_call_id": "x"}, signature="x")
    assert status_of(err) == 422


def test_unhandled_events_are_accepted_without_items() -> None:
    outcome = post({"event": "NOTIFY_IVR", "pbx_call_id": "in_1"}, signature="whatever")
    assert outcome.items == () and outcome.discarded == "ignored"
    assert outcome.response.status == 200


def test_hostile_caller_id_is_kept_as_text() -> None:
    params = dict(FIXTURES["notify_start"], caller_id="<script>\x07x</script>" + "1" * 300)
    (item,) = post(params).items
    assert item.sender.phones == (params["caller_id"],)
    assert "<" not in item.summary


HOSTILE_TEXT = [
    "",
    " ",
    "<script>alert(1)</script>",
    "\x00\x1f\x7f\u202e",
    "9" * 5000,
    "-1",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59",
    "2026-02-30 25:61:61",
    "answered",
    "NOTIFY_END",
    "Иван",
]


@pytest.mark.parametrize("name", [n for n in FIXTURES if not n.startswith("_")])
def test_hostile_signed_payloads_never_raise_anything_but_hook_errors(name: str) -> None:
    import random

    rng = random.Random(name)
    for _ in range(150):
        params = dict(FIXTURES[name])
        for _ in range(rng.randint(1, 4)):
            keys = [k for k in params if k != "event"]
            if not keys:
                break
            key = rng.choice(keys)
            if rng.random() < 0.2:
                del params[key]
            else:
                params[key] = rng.choice(HOSTILE_TEXT)
        try:
            outcome = post(params)
        except HookError as exc:
            assert exc.status in (400, 415, 422)
            continue
        for item in outcome.items:
            assert item.occurred_at.utcoffset() == timedelta(0)
            assert "<" not in item.summary
