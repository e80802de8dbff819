"""Telephony hooks through the gateway: Twilio, Zadarma, Mango Office, Asterisk.

Documented payloads (tests/fixtures/telephony) are signed the provider's way and posted to the
channel's webhook URL; a call's events become one timeline item whatever order they arrive in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from services.connectors.adapters.mango import mango_sign
from services.connectors.adapters.twilio import twilio_signature
from services.connectors.adapters.zadarma import zadarma_signature
from tests.support.hub import Api, eventually, touches

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telephony"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def make_channel(admin: Api, kind: str, secrets: dict[str, str], **extra: Any) -> dict[str, Any]:
    r = admin.post(
        "/api/v1/channels",
        json={"kind": kind, "name": f"{kind} line", "intake": "auto", "secrets": secrets, **extra},
    )
    assert r.status_code == 201, r.text
    return r.json()


def contacts(admin: Api) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/contacts")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def timeline(admin: Api, contact_id: str) -> list[dict[str, Any]]:
    return touches(admin, contact_id)


def health(admin: Api, channel_id: str) -> dict[str, Any]:
    return admin.get(f"/api/v1/channels/{channel_id}").json()["health"]


def settled_call(admin: Api, phone: str, check: Any) -> dict[str, Any]:
    """The single call item of the contact with ``phone`` once ``check(item)`` holds."""

    def probe() -> dict[str, Any] | None:
        found = admin.get("/api/v1/contacts", params={"phone": phone}).json()["items"]
        if len(found) != 1:
            return None
        items = timeline(admin, found[0]["id"])
        assert len(items) == 1, items
        return {"contact": found[0], "item": items[0]} if check(items[0]) else None

    return eventually(probe, timeout=20)


def assert_rejected_and_nothing_created(admin: Api, channel: dict[str, Any], r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    h = health(admin, channel["id"])
    assert h["rejected"] == 1 and h["received"] == 0
    assert h["last_error"] and h["last_error"].startswith("401")
    assert h["last_error_at"] is not None
    assert contacts(admin) == []


# ---- Twilio ---------------------------------------------------------------------------------


def post_twilio(channel: dict[str, Any], params: dict[str, str], token: str = "tw-token") -> httpx.Response:
    url = channel["webhook_url"]
    sig = twilio_signature(token, url, list(params.items()))
    return httpx.post(
        url,
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig},
    )


def test_twilio_missed_dial_leg_makes_one_missed_call(admin: Api) -> None:
    """Twilio's own order: the dial leg rings and ends no-answer (its <Dial action>), then the
    parent leg ends "completed", then the recording. The dial leg's verdict wins."""
    tw = fixture("twilio")
    channel = make_channel(admin, "twilio", {"auth_token": "tw-token"})
    order = ["dial_leg_ringing", "dial_leg_no_answer", "inbound_parent_completed", "recording_completed"]
    for name in order:
        r = post_twilio(channel, tw[name])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/xml")
        assert b"<Response/>" in r.content

    got = settled_call(
        admin,
        "+79161234567",
        lambda it: it["data"].get("status") == "missed" and it["data"].get("recording_url"),
    )
    contact, item = got["contact"], got["item"]
    assert contact["phones"] == ["+79161234567"]
    assert contact["source"]["channel_id"] == channel["id"] and contact["source"]["kind"] == "twilio"
    assert item["kind"] == "call" and item["direction"] == "in"
    assert item["data"]["call_id"] == "CA11111111111111111111111111111111"
    assert item["data"]["recording_url"] == tw["recording_completed"]["RecordingUrl"]
    assert item["summary"] == "Missed inbound call"
    assert item["data"]["duration_s"] == 0
    eventually(lambda: health(admin, channel["id"])["received"] == 4)


def test_twilio_events_in_reverse_order_converge_to_the_missed_call(admin: Api) -> None:
    tw = fixture("twilio")
    channel = make_channel(admin, "twilio", {"auth_token": "tw-token"})
    order = ["recording_completed", "inbound_parent_completed", "dial_leg_no_answer", "dial_leg_ringing"]
    for name in order:
        assert post_twilio(channel, tw[name]).status_code == 200
    got = settled_call(
        admin,
        "+79161234567",
        lambda it: it["data"].get("status") == "missed" and it["data"].get("recording_url"),
    )
    assert got["contact"]["name"] == "Ivan Petrov"
    assert got["item"]["data"]["leg"] in ("parent", "dial")


def test_twilio_reverse_order_summary_follows_the_missed_verdict(admin: Api) -> None:
    tw = fixture("twilio")
    channel = make_channel(admin, "twilio", {"auth_token": "tw-token"})
    for name in ("inbound_parent_completed", "dial_leg_no_answer"):
        assert post_twilio(channel, tw[name]).status_code == 200
    got = settled_call(admin, "+79161234567", lambda it: it["data"].get("status") == "missed")
    assert got["item"]["summary"] == "Missed inbound call"


def test_twilio_answered_call_with_dial_leg_completed_in_order(admin: Api) -> None:
    tw = fixture("twilio")
    channel = make_channel(admin, "twilio", {"auth_token": "tw-token"})
    dial_done = {**tw["dial_leg_no_answer"], "CallStatus": "completed", "CallDuration": "118"}
    for params in (
        tw["dial_leg_ringing"],
        dial_done,
        tw["inbound_parent_completed"],
        tw["recording_completed"],
    ):
        assert post_twilio(channel, params).status_code == 200
    got = settled_call(
        admin,
        "+79161234567",
        lambda it: it["data"].get("recording_url") and it["data"].get("duration_s") == 125,
    )
    assert got["item"]["data"]["status"] == "answered"


def test_twilio_duplicate_delivery_gives_one_item(admin: Api) -> None:
    tw = fixture("twilio")
    channel = make_channel(admin, "twilio", {"auth_token": "tw-token"})
    for _ in range(3):
        assert post_twilio(channel, tw["inbound_parent_completed"]).status_code == 200
    eventually(lambda: health(admin, channel["id"])["received"] == 3)
    got = settled_call(admin, "+79161234567", lambda it: it["data"].get("status") == "answered")
    assert got["item"]["data"]["duration_s"] == 125


def test_twilio_bad_signature_is_401_counted_and_creates_nothing(admin: Api) -> None:
    tw = fixture("twilio")
    channel = make_channel(admin, "twilio", {"auth_token": "tw-token"})
    r = post_twilio(channel, tw["inbound_parent_completed"], token="someone-elses-token")
    assert_rejected_and_nothing_created(admin, channel, r)


# ---- Zadarma --------------------------------------------------------------------------------


def post_zadarma(
    channel: dict[str, Any], params: dict[str, str], secret: str = "zd-secret"
) -> httpx.Response:
    sig = zadarma_signature(secret, params["event"], params)
    return httpx.post(
        channel["webhook_url"],
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Signature": sig},
    )


def test_zadarma_echo_check_answers_exactly(admin: Api) -> None:
    channel = make_channel(admin, "zadarma", {"api_secret": "zd-secret"})
    r = httpx.get(channel["webhook_url"], params={"zd_echo": "a1B2c3D4e5"})
    assert r.status_code == 200 and r.text == "a1B2c3D4e5"
    assert health(admin, channel["id"])["received"] == 0


def test_zadarma_record_end_start_in_reverse_order_make_one_answered_call(admin: Api) -> None:
    zd = fixture("zadarma")
    channel = make_channel(admin, "zadarma", {"api_secret": "zd-secret"})
    for name in ("notify_record", "notify_end", "notify_start"):
        r = post_zadarma(channel, zd[name])
        assert r.status_code == 200, r.text
        if name == "notify_start":
            assert r.content == b""  # Zadarma wants an empty answer to NOTIFY_START
    got = settled_call(
        admin,
        "79161234567",
        lambda it: it["data"].get("status") == "answered" and it["data"].get("recording_id"),
    )
    contact, item = got["contact"], got["item"]
    assert contact["phones"] == ["+79161234567"]
    assert item["direction"] == "in"
    assert item["data"]["duration_s"] == 125
    assert item["data"]["recording_id"] == "1732716190.1234567"
    assert item["data"]["call_id"] == zd["notify_end"]["pbx_call_id"]
    # 17:03:10 Moscow time is 14:03:10 UTC.
    assert item["occurred_at"].startswith("2026-11-27T14:03:10")


def test_zadarma_missed_call_and_duplicates(admin: Api) -> None:
    zd = fixture("zadarma")
    channel = make_channel(admin, "zadarma", {"api_secret": "zd-secret"})
    for _ in range(2):
        assert post_zadarma(channel, zd["notify_end_missed"]).status_code == 200
    got = settled_call(admin, "+79160001122", lambda it: it["data"].get("status") == "missed")
    assert got["contact"]["phones"] == ["+79160001122"]
    eventually(lambda: health(admin, channel["id"])["received"] == 2)
    assert len(timeline(admin, got["contact"]["id"])) == 1


def test_zadarma_bad_signature_is_401_and_creates_nothing(admin: Api) -> None:
    zd = fixture("zadarma")
    channel = make_channel(admin, "zadarma", {"api_secret": "zd-secret"})
    r = post_zadarma(channel, zd["notify_end"], secret="wrong")
    assert_rejected_and_nothing_created(admin, channel, r)


# ---- Mango Office ---------------------------------------------------------------------------


def post_mango(
    channel: dict[str, Any], path: str, event: dict[str, Any], key: str = "mg-key", salt: str = "mg-salt"
) -> httpx.Response:
    text = json.dumps(event, ensure_ascii=False)
    form = {"vpbx_api_key": key, "sign": mango_sign(key, text, salt), "json": text}
    return httpx.post(
        f"{channel['webhook_url']}/events/{path}",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_mango_events_in_reverse_order_converge_to_one_answered_call(admin: Api) -> None:
    mg = fixture("mango")
    channel = make_channel(admin, "mango", {"api_key": "mg-key", "api_salt": "mg-salt"})
    sequence = [
        ("recording", "recording_completed"),
        ("summary", "summary_answered"),
        ("call", "call_disconnected"),
        ("call", "call_connected"),
        ("call", "call_appeared"),
    ]
    for path, name in sequence:
        r = post_mango(channel, path, mg[name])
        assert r.status_code == 200, r.text
    got = settled_call(
        admin,
        "+79161234567",
        lambda it: it["data"].get("status") == "answered" and it["data"].get("recording_id"),
    )
    item = got["item"]
    assert item["direction"] == "in"
    assert item["data"]["duration_s"] == 125
    assert item["data"]["call_id"] == mg["summary_answered"]["entry_id"]
    assert item["data"]["recording_id"] == mg["recording_completed"]["recording_id"]
    eventually(lambda: health(admin, channel["id"])["received"] == 5)


def test_mango_duplicate_summary_and_bad_sign(admin: Api) -> None:
    mg = fixture("mango")
    channel = make_channel(admin, "mango", {"api_key": "mg-key", "api_salt": "mg-salt"})
    r = post_mango(channel, "summary", mg["summary_missed"], salt="not-the-salt")
    assert_rejected_and_nothing_created(admin, channel, r)
    for _ in range(2):
        assert post_mango(channel, "summary", mg["summary_missed"]).status_code == 200
    got = settled_call(admin, "+79260001122", lambda it: it["data"].get("status") == "missed")
    assert got["item"]["summary"] == "Missed inbound call"
    eventually(lambda: health(admin, channel["id"])["received"] == 2)
    assert len(timeline(admin, got["contact"]["id"])) == 1


def test_mango_sign_is_checked_on_the_raw_json_field(admin: Api) -> None:
    """Re-serialising the JSON (other spacing) changes the bytes: the original sign must fail."""
    mg = fixture("mango")
    channel = make_channel(admin, "mango", {"api_key": "mg-key", "api_salt": "mg-salt"})
    signed = json.dumps(mg["summary_answered"])
    sent = json.dumps(mg["summary_answered"], separators=(",", ":"))
    form = {"vpbx_api_key": "mg-key", "sign": mango_sign("mg-key", signed, "mg-salt"), "json": sent}
    r = httpx.post(
        f"{channel['webhook_url']}/events/summary",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 401


# ---- Asterisk -------------------------------------------------------------------------------


def post_asterisk(channel: dict[str, Any], cdr: dict[str, Any], secret: str = "ast-secret") -> httpx.Response:
    body = json.dumps(cdr, ensure_ascii=False).encode()
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(
        channel["webhook_url"],
        content=body,
        headers={"Content-Type": "application/json", "X-Signature": f"sha256={sig}"},
    )


def test_asterisk_cdr_creates_contact_with_answered_call_once(admin: Api) -> None:
    ast = fixture("asterisk")
    channel = make_channel(admin, "asterisk", {"hmac_secret": "ast-secret"})
    for _ in range(2):
        r = post_asterisk(channel, ast["inbound_answered"])
        assert r.status_code == 200, r.text
    got = settled_call(admin, "+79161234567", lambda it: it["data"].get("status") == "answered")
    contact, item = got["contact"], got["item"]
    assert contact["name"] == "Иван Петров"
    assert contact["phones"] == ["+79161234567"]
    assert item["direction"] == "in"
    assert item["data"]["duration_s"] == 125
    assert item["data"]["recording_url"] == ast["inbound_answered"]["recording_url"]
    eventually(lambda: health(admin, channel["id"])["received"] == 2)
    assert len(timeline(admin, contact["id"])) == 1


def test_asterisk_bad_hmac_is_401_and_creates_nothing(admin: Api) -> None:
    ast = fixture("asterisk")
    channel = make_channel(admin, "asterisk", {"hmac_secret": "ast-secret"})
    r = post_asterisk(channel, ast["inbound_no_answer"], secret="guess")
    assert_rejected_and_nothing_created(admin, channel, r)


def test_absurd_caller_id_gives_a_clean_call_record_with_the_raw_number_kept(admin: Api) -> None:
    zd = fixture("zadarma")
    channel = make_channel(admin, "zadarma", {"api_secret": "zd-secret"})
    absurd = "<script>alert(1)</script>999999999999999999999999"
    params = {**zd["notify_end_missed"], "caller_id": absurd}
    r = post_zadarma(channel, params)
    assert r.status_code == 200, r.text
    assert b"script" not in r.content

    def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
        found = contacts(admin)
        if len(found) != 1:
            return None
        items = timeline(admin, found[0]["id"])
        return (found[0], items[0]) if items else None

    contact, item = eventually(probe)
    assert contact["phones"] == []
    assert item["kind"] == "call" and item["data"]["status"] == "missed"
    assert item["data"]["from"] == absurd  # kept as text (JSON-escaped by the API), never parsed
