"""Mango Office VPBX events → call interactions."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from services.connectors.adapters.base import ChannelView, HookError, HookOutcome, RawRequest
from services.connectors.adapters.mango import ADAPTER, MangoAdapter
from tests.support.fuzz import mutate_tree

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "telephony" / "mango.json").read_text("utf-8")
)
API_KEY = "k3yk3yk3yk3yk3yk3yk3yk3yk3yk3yk3"
SALT = "s4lts4lts4lts4lts4lts4lts4lts4lt"
NOW = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
CHANNEL = ChannelView("ch_mango", "t1", "mango", {}, {"api_key": API_KEY, "api_salt": SALT})
ENTRY = "MjYwNTM1NzA2Mzo1MDE="


def post(
    subpath: str,
    event: Any,
    *,
    key: str = API_KEY,
    salt: str = SALT,
    sign: str | None = None,
    json_text: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
    channel: ChannelView = CHANNEL,
) -> HookOutcome:
    """Post as Mango does: form fields vpbx_api_key, sign = sha256(key + json + salt), json."""
    text = json_text if json_text is not None else json.dumps(event, ensure_ascii=False)
    signature = sign or hashlib.sha256((key + text + salt).encode()).hexdigest()
    body = urlencode({"vpbx_api_key": key, "sign": signature, "json": text}).encode()
    req = RawRequest(
        "POST",
        "https://crm.example.com/hooks/ch_mango" + subpath,
        subpath,
        "",
        {"content-type": content_type},
        body,
    )
    return ADAPTER.handle(channel, req, NOW)


def test_adapter_declares_kind() -> None:
    assert isinstance(ADAPTER, MangoAdapter) and ADAPTER.kind == "mango"


def test_call_appeared_is_ringing_inbound_call() -> None:
    outcome = post("/events/call", FIXTURES["call_appeared"])
    assert outcome.response.status == 200 and outcome.response.body == b""
    (item,) = outcome.items
    assert item.kind == "call" and item.direction == "in"
    assert item.subject_key == f"mango:call:{ENTRY}"
    assert item.idempotency_key == f"mango:{ENTRY}:MToxMDA1NzU5MzozNjE6NjIxNTE1NjE2OjE=:1"
    assert item.data["status"] == "ringing"
    assert item.sender.phones == ("79161234567",)
    assert item.occurred_at == datetime.fromtimestamp(1795874590, tz=UTC)


def test_connected_is_in_progress_and_disconnected_gives_no_verdict() -> None:
    (connected,) = post("/events/call", FIXTURES["call_connected"]).items
    (ended,) = post("/events/call", FIXTURES["call_disconnected"]).items
    assert connected.data["status"] == "in_progress"
    assert "status" not in ended.data
    assert ended.data["disconnect_reason"] == "1110"


def test_summary_answered_has_talk_duration() -> None:
    (item,) = post("/events/summary", FIXTURES["summary_answered"]).items
    assert item.idempotency_key == f"mango:{ENTRY}:summary"
    assert item.data["status"] == "answered"
    assert item.data["duration_s"] == 125
    assert item.summary == "Inbound call, 2 min 5 s"
    assert item.occurred_at == datetime.fromtimestamp(1795874590, tz=UTC)


def test_summary_missed_is_missed_inbound_call() -> None:
    (item,) = post("/events/summary", FIXTURES["summary_missed"]).items
    assert item.data["status"] == "missed"
    assert item.summary == "Missed inbound call"
    assert item.sender.phones == ("79260001122",)


def test_missed_call_lasted_zero_seconds() -> None:
    """Mango's summary of a missed call has no talk time (``duration_s`` was null): it is 0."""
    (item,) = post("/events/summary", FIXTURES["summary_missed"]).items
    assert item.data["duration_s"] == 0


def test_outbound_summary_with_string_numbers_targets_callee() -> None:
    (item,) = post("/events/summary", FIXTURES["summary_outbound"]).items
    assert item.direction == "out"
    assert item.sender.phones == ("79031112233",)
    assert item.data["duration_s"] == 60


def test_internal_summary_creates_nothing() -> None:
    outcome = post("/events/summary", dict(FIXTURES["summary_answered"], call_direction=0))
    assert outcome.items == () and outcome.discarded == "ignored"


def test_summary_before_call_events_shares_subject_key() -> None:
    names = ["summary_answered", "call_disconnected", "call_appeared", "recording_completed"]
    paths = ["/events/summary", "/events/call", "/events/call", "/events/recording"]
    items = [post(p, FIXTURES[n]).items[0] for p, n in zip(paths, names, strict=True)]
    assert {i.subject_key for i in items} == {f"mango:call:{ENTRY}"}
    assert len({i.idempotency_key for i in items}) == 4


def test_duplicate_event_has_same_idempotency_key() -> None:
    a = post("/events/call", FIXTURES["call_connected"]).items[0]
    b = post("/events/call/", FIXTURES["call_connected"]).items[0]
    assert a.idempotency_key == b.idempotency_key


def test_recording_event_gives_recording_id() -> None:
    (item,) = post("/events/recording", FIXTURES["recording_completed"]).items
    assert item.data["recording_id"] == "MToxMDA1NzU5MzoxMTA1NzYzOTU5OjA="


def test_started_recording_creates_nothing() -> None:
    event = dict(FIXTURES["recording_completed"], recording_state="Started")
    assert post("/events/recording", event).items == ()


def test_other_event_paths_are_accepted_without_items() -> None:
    outcome = post("/events/dtmf", {"entry_id": ENTRY, "dtmf": "1"})
    assert outcome.items == () and outcome.response.status == 200


def test_sign_is_checked_on_raw_json_field() -> None:
    # Same event, different whitespace: signed as sent, so it verifies.
    text = json.dumps(FIXTURES["call_appeared"], indent=2)
    (item,) = post("/events/call", None, json_text=text).items
    assert item.data["status"] == "ringing"


def test_bad_sign_is_401() -> None:
    with pytest.raises(HookError) as err:
        post("/events/call", FIXTURES["call_appeared"], sign="0" * 64)
    assert err.value.status == 401


def test_foreign_api_key_is_401() -> None:
    with pytest.raises(HookError) as err:
        post("/events/call", FIXTURES["call_appeared"], key="other-key")
    assert err.value.status == 401


def test_sign_with_wrong_salt_is_401() -> None:
    with pytest.raises(HookError) as err:
        post("/events/call", FIXTURES["call_appeared"], salt="not-the-salt")
    assert err.value.status == 401


def test_json_content_type_is_415() -> None:
    with pytest.raises(HookError) as err:
        post("/events/call", FIXTURES["call_appeared"], content_type="application/json")
    assert err.value.status == 415


def test_truncated_json_is_400() -> None:
    with pytest.raises(HookError) as err:
        post("/events/call", None, json_text='{"entry_id": "MjYw')
    assert err.value.status == 400


def test_missing_entry_id_is_422() -> None:
    event = {k: v for k, v in FIXTURES["call_appeared"].items() if k != "entry_id"}
    with pytest.raises(HookError) as err:
        post("/events/call", event)
    assert err.value.status == 422 and "entry_id" in err.value.errors


def test_json_array_is_422() -> None:
    with pytest.raises(HookError) as err:
        post("/events/summary", [1, 2])
    assert err.value.status == 422


def test_hostile_numbers_are_kept_as_text() -> None:
    event = dict(FIXTURES["call_appeared"], **{"from": {"number": "<img src=x>\u202e" + "8" * 400}})
    (item,) = post("/events/call", event).items
    assert item.sender.phones == (event["from"]["number"],)
    assert "<" not in item.summary


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
    {"number": {"x": []}, "extension": 7},
]


def mutate(obj: dict[str, Any], rng: Any) -> dict[str, Any]:
    return mutate_tree(obj, rng, HOSTILE, descend=0.5)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/events/call", "call_appeared"),
        ("/events/call", "call_disconnected"),
        ("/events/summary", "summary_answered"),
        ("/events/summary", "summary_outbound"),
        ("/events/recording", "recording_completed"),
    ],
)
def test_hostile_signed_payloads_never_raise_anything_but_hook_errors(path: str, name: str) -> None:
    import random

    rng = random.Random(name)
    for _ in range(150):
        try:
            outcome = post(path, mutate(FIXTURES[name], rng))
        except HookError as exc:
            assert exc.status in (400, 422)
            continue
        for item in outcome.items:
            assert item.occurred_at.utcoffset() == timedelta(0)
            assert "<" not in item.summary


def test_lone_surrogate_in_json_is_400() -> None:
    with pytest.raises(HookError) as err:
        post("/events/call", None, json_text='{"entry_id": "\\ud800", "call_id": "x"}')
    assert err.value.status == 400
