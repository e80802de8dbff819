"""Twilio Voice status / recording callbacks → call interactions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from services.connectors.adapters.base import ChannelView, HookError, HookOutcome, RawRequest
from services.connectors.adapters.twilio import ADAPTER, TwilioAdapter, twilio_signature

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "telephony" / "twilio.json").read_text("utf-8")
)
TOKEN = "f3a1c0ffee0123456789abcdef012345"
URL = "https://crm.example.com/hooks/ch_twilio"
NOW = datetime(2026, 11, 27, 14, 10, tzinfo=UTC)
CHANNEL = ChannelView("ch_twilio", "t1", "twilio", {}, {"auth_token": TOKEN})


def sign(token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented scheme: URL + sorted name+value pairs, HMAC-SHA1, base64."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def request(
    params: dict[str, str],
    *,
    signature: str | None = None,
    url: str = URL,
    content_type: str = "application/x-www-form-urlencoded",
    body: bytes | None = None,
) -> RawRequest:
    headers = {"content-type": content_type}
    headers["x-twilio-signature"] = signature if signature is not None else sign(TOKEN, url, params)
    return RawRequest(
        "POST",
        url,
        "",
        "",
        headers,
        body if body is not None else urlencode(params).encode(),
    )


def handle(params: dict[str, str], **kw: Any) -> HookOutcome:
    return ADAPTER.handle(CHANNEL, request(params, **kw), NOW)


def test_signature_matches_twilio_documented_example() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    got = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", list(params.items()))
    assert got == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_adapter_declares_kind() -> None:
    assert isinstance(ADAPTER, TwilioAdapter) and ADAPTER.kind == "twilio"


def test_completed_inbound_call_is_answered_call_with_duration() -> None:
    outcome = handle(FIXTURES["inbound_parent_completed"])
    assert outcome.response.status == 200
    assert outcome.response.content_type.startswith("text/xml")
    assert b"<Response/>" in outcome.response.body
    assert outcome.durable and outcome.discarded is None
    (item,) = outcome.items
    assert item.kind == "call"
    assert item.direction == "in"
    assert item.idempotency_key == "twilio:CA11111111111111111111111111111111:0"
    assert item.subject_key == "twilio:call:CA11111111111111111111111111111111"
    assert item.sender.phones == ("+79161234567",)
    assert item.sender.name == "Ivan Petrov"
    assert item.occurred_at == datetime(2026, 11, 27, 14, 5, 15, tzinfo=UTC)
    assert item.data["status"] == "answered"
    assert item.data["duration_s"] == 125
    assert item.data["from"] == "+79161234567" and item.data["to"] == "+74951234567"
    assert item.data["call_id"] == "CA11111111111111111111111111111111"
    assert item.summary == "Inbound call, 2 min 5 s"


def test_unanswered_dial_leg_is_missed_call_joined_to_parent() -> None:
    (item,) = handle(FIXTURES["dial_leg_no_answer"]).items
    assert item.subject_key == "twilio:call:CA11111111111111111111111111111111"
    assert item.idempotency_key == "twilio:CA22222222222222222222222222222222:3"
    assert item.data["status"] == "missed"
    assert item.data["leg"] == "dial"
    assert item.direction == "in"
    assert item.sender.phones == ("+79161234567",)
    assert item.summary == "Missed inbound call"


@pytest.mark.parametrize("status", ["busy", "failed", "canceled"])
def test_dial_leg_ending_busy_failed_or_canceled_is_missed(status: str) -> None:
    params = dict(FIXTURES["dial_leg_no_answer"], CallStatus=status)
    (item,) = handle(params).items
    assert item.data["status"] == "missed"


def test_ringing_dial_leg_is_non_final_ringing() -> None:
    (item,) = handle(FIXTURES["dial_leg_ringing"]).items
    assert item.data["status"] == "ringing"
    assert "duration_s" not in item.data


def test_events_arriving_out_of_order_share_the_call_subject_key() -> None:
    order = [
        "recording_completed",
        "inbound_parent_completed",
        "dial_leg_no_answer",
        "dial_leg_ringing",
    ]
    items = [handle(FIXTURES[name]).items[0] for name in order]
    assert {i.subject_key for i in items} == {"twilio:call:CA11111111111111111111111111111111"}
    assert len({i.idempotency_key for i in items}) == len(items)


def test_same_callback_twice_gives_same_idempotency_key() -> None:
    first = handle(FIXTURES["dial_leg_no_answer"]).items[0]
    later = ADAPTER.handle(
        CHANNEL, request(FIXTURES["dial_leg_no_answer"]), datetime(2026, 12, 1, tzinfo=UTC)
    ).items[0]
    assert first.idempotency_key == later.idempotency_key
    assert first == later  # deterministic, the payload's Timestamp wins over `now`


def test_without_sequence_number_key_uses_call_status() -> None:
    params = {k: v for k, v in FIXTURES["inbound_parent_completed"].items() if k != "SequenceNumber"}
    (item,) = handle(params).items
    assert item.idempotency_key == "twilio:CA11111111111111111111111111111111:completed"


def test_recording_callback_brings_recording_url() -> None:
    (item,) = handle(FIXTURES["recording_completed"]).items
    assert item.subject_key == "twilio:call:CA11111111111111111111111111111111"
    assert item.data["recording_url"] == FIXTURES["recording_completed"]["RecordingUrl"]
    assert item.idempotency_key == (
        "twilio:CA11111111111111111111111111111111:recording:RE33333333333333333333333333333333"
    )
    assert "status" not in item.data  # must not override the call's verdict


def test_recording_in_progress_creates_nothing() -> None:
    outcome = handle(dict(FIXTURES["recording_completed"], RecordingStatus="in-progress"))
    assert outcome.items == () and outcome.discarded == "ignored"
    assert outcome.response.status == 200


def test_outbound_busy_call_is_outbound_with_client_as_to() -> None:
    (item,) = handle(FIXTURES["outbound_api_busy"]).items
    assert item.direction == "out"
    assert item.sender.phones == ("8 (916) 765-43-21",)
    assert item.data["status"] == "busy"
    assert item.summary == "Outbound call, busy"


def test_dial_action_callback_uses_dial_call_status() -> None:
    params = dict(
        FIXTURES["inbound_parent_completed"],
        CallStatus="in-progress",
        DialCallStatus="no-answer",
        DialCallSid="CA22222222222222222222222222222222",
    )
    (item,) = handle(params).items
    assert item.data["status"] == "missed"
    assert item.subject_key == "twilio:call:CA11111111111111111111111111111111"


def test_get_callback_is_signed_over_url_alone() -> None:
    params = FIXTURES["inbound_parent_completed"]
    url = URL + "?" + urlencode(params)
    req = RawRequest("GET", url, "", urlencode(params), {"x-twilio-signature": sign(TOKEN, url, {})}, b"")
    (item,) = ADAPTER.handle(CHANNEL, req, NOW).items
    assert item.data["status"] == "answered"


def test_bad_signature_is_401() -> None:
    with pytest.raises(HookError) as err:
        handle(FIXTURES["inbound_parent_completed"], signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert err.value.status == 401


def test_signature_over_another_url_is_401() -> None:
    params = FIXTURES["inbound_parent_completed"]
    with pytest.raises(HookError) as err:
        handle(params, signature=sign(TOKEN, "http://crm.example.com/hooks/ch_twilio", params))
    assert err.value.status == 401


def test_tampered_parameter_is_401() -> None:
    params = FIXTURES["inbound_parent_completed"]
    good = sign(TOKEN, URL, params)
    with pytest.raises(HookError) as err:
        handle(dict(params, CallDuration="9999"), signature=good)
    assert err.value.status == 401


def test_missing_signature_or_token_is_401() -> None:
    params = FIXTURES["inbound_parent_completed"]
    req = RawRequest(
        "POST",
        URL,
        "",
        "",
        {"content-type": "application/x-www-form-urlencoded"},
        urlencode(params).encode(),
    )
    with pytest.raises(HookError) as err:
        ADAPTER.handle(CHANNEL, req, NOW)
    assert err.value.status == 401
    no_token = ChannelView("ch", "t1", "twilio", {}, {})
    with pytest.raises(HookError) as err:
        ADAPTER.handle(no_token, request(params), NOW)
    assert err.value.status == 401


def test_json_body_is_415() -> None:
    with pytest.raises(HookError) as err:
        handle(FIXTURES["inbound_parent_completed"], content_type="application/json", body=b"{}")
    assert err.value.status == 415


def test_undecodable_body_is_400() -> None:
    body = b"CallSid=CA1&From=%FF%FE"
    with pytest.raises(HookError) as err:
        handle({}, body=body, signature="x")
    assert err.value.status == 400


def test_missing_call_sid_is_422_naming_the_field() -> None:
    params = {k: v for k, v in FIXTURES["inbound_parent_completed"].items() if k != "CallSid"}
    with pytest.raises(HookError) as err:
        handle(params)
    assert err.value.status == 422
    assert "CallSid" in err.value.errors


def test_unknown_call_status_is_422() -> None:
    with pytest.raises(HookError) as err:
        handle(dict(FIXTURES["inbound_parent_completed"], CallStatus="exploded"))
    assert err.value.status == 422


def test_hostile_values_are_kept_as_text_and_kept_out_of_summary() -> None:
    params = dict(
        FIXTURES["inbound_parent_completed"],
        From="<script>alert(1)</script>\x00\x1b" + "9" * 500,
        CallerName="<b>Robert'); DROP TABLE--</b>",
        CallDuration="-5",
        Timestamp="not a date",
    )
    (item,) = handle(params).items
    assert item.sender.phones == (params["From"],)
    assert item.sender.name == params["CallerName"]
    assert "duration_s" not in item.data
    assert item.occurred_at == NOW
    assert "<" not in item.summary


HOSTILE_TEXT = [
    "",
    " ",
    "<script>alert(1)</script>",
    "\x00\x1f\x7f\u202e",
    "9" * 5000,
    "-1",
    "1e400",
    "Mon, 01 Jan 0001 00:00:00 +0100",
    "Fri, 31 Dec 9999 23:59:59 -1400",
    "ringing",
    "completed",
    "Иван",
]


@pytest.mark.parametrize("name", [n for n in FIXTURES if not n.startswith("_")])
def test_hostile_signed_payloads_never_raise_anything_but_hook_errors(name: str) -> None:
    import random

    rng = random.Random(name)
    for _ in range(150):
        params = dict(FIXTURES[name])
        for _ in range(rng.randint(1, 4)):
            key = rng.choice(list(params))
            if rng.random() < 0.2:
                del params[key]
            else:
                params[key] = rng.choice(HOSTILE_TEXT)
        try:
            outcome = handle(params)
        except HookError as exc:
            assert exc.status in (400, 415, 422)
            continue
        for item in outcome.items:
            assert item.occurred_at.utcoffset() == timedelta(0)
            assert "<" not in item.summary
            assert item.subject_key and item.subject_key.startswith("twilio:call:")


def test_browser_agent_calling_out_is_outbound_to_the_dialled_client() -> None:
    params = dict(
        FIXTURES["inbound_parent_completed"],
        From="client:anna",
        Caller="client:anna",
        To="+79031112233",
    )
    (item,) = handle(params).items
    assert item.direction == "out"
    assert item.sender.phones == ("+79031112233",)


def test_dial_leg_from_one_of_our_numbers_is_outbound() -> None:
    channel = ChannelView("ch_twilio", "t1", "twilio", {"numbers": ["+74951234567"]}, {"auth_token": TOKEN})
    params = dict(FIXTURES["dial_leg_no_answer"], From="+74951234567", To="+79031112233")
    (item,) = ADAPTER.handle(channel, request(params), NOW).items
    assert item.direction == "out"
    assert item.sender.phones == ("+79031112233",)
    assert item.data["status"] == "missed"
