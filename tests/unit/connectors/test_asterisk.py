"""Asterisk CDRs posted by a PBX bridge → call interactions."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.connectors.adapters.asterisk import ADAPTER, AsteriskAdapter, parse_clid
from services.connectors.adapters.base import ChannelView, HookError, HookOutcome, RawRequest

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "telephony" / "asterisk.json").read_text("utf-8")
)
SECRET = "bridge-shared-secret"
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
PLAIN = ChannelView("ch_ast", "t1", "asterisk", {}, {})
SIGNED = ChannelView("ch_ast", "t1", "asterisk", {}, {"hmac_secret": SECRET})


def post(
    cdr: Any,
    *,
    channel: ChannelView = PLAIN,
    body: bytes | None = None,
    signature: str | None = None,
    content_type: str = "application/json",
) -> HookOutcome:
    raw = body if body is not None else json.dumps(cdr, ensure_ascii=False).encode()
    headers = {"content-type": content_type}
    if signature is not None:
        headers["x-signature"] = signature
    elif channel.secrets.get("hmac_secret"):
        digest = hmac.new(channel.secrets["hmac_secret"].encode(), raw, hashlib.sha256).hexdigest()
        headers["x-signature"] = "sha256=" + digest
    req = RawRequest("POST", "https://crm.example.com/hooks/ch_ast", "", "", headers, raw)
    return ADAPTER.handle(channel, req, NOW)


def test_adapter_declares_kind() -> None:
    assert isinstance(ADAPTER, AsteriskAdapter) and ADAPTER.kind == "asterisk"


def test_answered_inbound_cdr_becomes_answered_call() -> None:
    (item,) = post(FIXTURES["inbound_answered"]).items
    assert item.kind == "call" and item.direction == "in"
    assert item.idempotency_key == "asterisk:1795874590.18:42"
    assert item.subject_key == "asterisk:call:1795874590.18"
    assert item.sender.phones == ("79161234567",)
    assert item.sender.name == "Иван Петров"
    assert item.occurred_at == datetime(2026, 11, 27, 14, 3, 10, tzinfo=UTC)
    assert item.occurred_at.tzinfo is not None
    assert item.data["status"] == "answered"
    assert item.data["duration_s"] == 125
    assert item.data["recording_url"] == FIXTURES["inbound_answered"]["recording_url"]
    assert item.summary == "Inbound call, 2 min 5 s"


def test_no_answer_cdr_to_extension_is_missed_inbound_call() -> None:
    (item,) = post(FIXTURES["inbound_no_answer"]).items
    assert item.direction == "in"
    assert item.data["status"] == "missed"
    assert item.data["duration_s"] == 0
    assert item.summary == "Missed inbound call"


def test_cdr_from_extension_is_outbound_to_dst() -> None:
    (item,) = post(FIXTURES["outbound_busy"]).items
    assert item.direction == "out"
    assert item.sender.phones == ("89031112233",)
    assert item.sender.name is None  # clid is our manager, not the client
    assert item.data["status"] == "busy"


def test_direction_hint_from_config_wins() -> None:
    channel = ChannelView("c", "t", "asterisk", {"direction": "out"}, {})
    (item,) = post(FIXTURES["inbound_no_answer"], channel=channel).items
    assert item.direction == "out"
    assert item.sender.phones == ("101",)


def test_timezone_from_config() -> None:
    channel = ChannelView("c", "t", "asterisk", {"timezone": "UTC"}, {})
    (item,) = post(FIXTURES["inbound_answered"], channel=channel).items
    assert item.occurred_at == datetime(2026, 11, 27, 17, 3, 10, tzinfo=UTC)


def test_cdrs_of_one_call_share_subject_key_by_linkedid() -> None:
    leg = dict(
        FIXTURES["inbound_no_answer"],
        uniqueid="1795874590.19",
        linkedid="1795874590.18",
        dst="102",
    )
    a = post(FIXTURES["inbound_answered"]).items[0]
    b = post(leg).items[0]
    assert a.subject_key == b.subject_key
    assert a.idempotency_key != b.idempotency_key


def test_same_cdr_twice_gives_same_idempotency_key() -> None:
    a = post(FIXTURES["inbound_no_answer"]).items[0]
    b = post(FIXTURES["inbound_no_answer"]).items[0]
    assert a.idempotency_key == b.idempotency_key == "asterisk:1795878600.25"


def test_signed_cdr_is_accepted_when_secret_is_set() -> None:
    (item,) = post(FIXTURES["inbound_answered"], channel=SIGNED).items
    assert item.data["status"] == "answered"


def test_missing_signature_with_secret_is_401() -> None:
    with pytest.raises(HookError) as err:
        post(FIXTURES["inbound_answered"], channel=SIGNED, signature="")
    assert err.value.status == 401


def test_bad_signature_is_401() -> None:
    with pytest.raises(HookError) as err:
        post(FIXTURES["inbound_answered"], channel=SIGNED, signature="sha256=" + "ab" * 32)
    assert err.value.status == 401


def test_form_body_is_415() -> None:
    with pytest.raises(HookError) as err:
        post(None, body=b"uniqueid=1", content_type="application/x-www-form-urlencoded")
    assert err.value.status == 415


def test_truncated_json_is_400() -> None:
    with pytest.raises(HookError) as err:
        post(None, body=b'{"uniqueid": "1795874590.18", "src": "7916')
    assert err.value.status == 400


def test_missing_fields_are_422_with_errors() -> None:
    with pytest.raises(HookError) as err:
        post({"src": "79161234567"})
    assert err.value.status == 422
    assert {"uniqueid", "disposition", "start"} <= set(err.value.errors)


def test_unknown_disposition_is_422() -> None:
    with pytest.raises(HookError) as err:
        post(dict(FIXTURES["inbound_answered"], disposition="EXPLODED"))
    assert err.value.status == 422 and "disposition" in err.value.errors


def test_iso_start_with_offset_is_respected() -> None:
    (item,) = post(dict(FIXTURES["inbound_answered"], start="2026-11-27T17:03:10+05:00")).items
    assert item.occurred_at == datetime(2026, 11, 27, 12, 3, 10, tzinfo=UTC)


def test_hostile_values_are_kept_as_text() -> None:
    cdr = dict(
        FIXTURES["inbound_answered"],
        src="<script>alert(1)</script>\x00",
        clid='"<b>x</b>" <\x1b[31m>',
        billsec="99999999999999999999",
    )
    (item,) = post(cdr).items
    assert item.sender.phones == ("<script>alert(1)</script>\x00",)
    assert "duration_s" not in item.data
    assert "<" not in item.summary


def test_parse_clid() -> None:
    assert parse_clid('"Иван Петров" <79161234567>') == ("Иван Петров", "79161234567")
    assert parse_clid("79161234567") == (None, "79161234567")
    assert parse_clid(None) == (None, None)


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
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59",
    "2026-02-30 25:61:61",
    [],
    {},
    [None, {"a": 1}],
]


@pytest.mark.parametrize("name", [n for n in FIXTURES if not n.startswith("_")])
def test_hostile_payloads_never_raise_anything_but_hook_errors(name: str) -> None:
    import random

    rng = random.Random(name)
    for _ in range(200):
        cdr = dict(FIXTURES[name])
        for _ in range(rng.randint(1, 4)):
            key = rng.choice(list(cdr))
            if rng.random() < 0.2:
                del cdr[key]
            else:
                cdr[key] = rng.choice(HOSTILE)
        try:
            outcome = post(cdr, channel=SIGNED)
        except HookError as exc:
            assert exc.status in (400, 422)
            continue
        for item in outcome.items:
            assert item.occurred_at.utcoffset() == timedelta(0)
            assert "<" not in item.summary


@pytest.mark.parametrize(
    "url", ["javascript:alert(document.cookie)", "file:///etc/passwd", "data:text/html,<b>x</b>", "//evil/x"]
)
def test_a_recording_url_that_is_not_http_is_not_kept(url: str) -> None:
    (item,) = post({**FIXTURES["inbound_answered"], "recording_url": url}).items
    assert "recording_url" not in item.data


def test_an_https_recording_url_is_kept() -> None:
    url = "https://pbx.example.com/rec/1795874590.18.wav"
    (item,) = post({**FIXTURES["inbound_answered"], "recording_url": url}).items
    assert item.data["recording_url"] == url
