"""WhatsApp Cloud API webhooks: verification GET, X-Hub-Signature-256, each message type, statuses."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.connectors.adapters import get_adapter
from services.connectors.adapters.base import ChannelView, HookError, RawRequest, hmac_sha256_hex
from services.connectors.adapters.whatsapp import ADAPTER, MAX_ITEMS
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

FIXTURES = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "messengers" / "whatsapp.json").read_text()
)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
APP_SECRET = "wa-app-secret"
URL = "https://crm.example.com/hooks/wa1"


def channel(secrets: dict[str, str] | None = None, config: dict[str, Any] | None = None) -> ChannelView:
    return ChannelView(
        id="wa1",
        tenant_id="t1",
        kind="whatsapp",
        config=config if config is not None else {"phone_number_id": "106540352242922"},
        secrets=secrets
        if secrets is not None
        else {"app_secret": APP_SECRET, "verify_token": "wa-verify", "access_token": "EAAG"},
    )


def signed(doc: Any, secret: str = APP_SECRET, signature: str | None = None) -> RawRequest:
    body = json.dumps(doc).encode()
    sig = signature if signature is not None else "sha256=" + hmac_sha256_hex(secret, body)
    headers = {"content-type": "application/json", "x-hub-signature-256": sig}
    return RawRequest("POST", URL, "", "", headers, body)


def handle(doc: Any, ch: ChannelView | None = None):
    return ADAPTER.handle(ch or channel(), signed(doc), NOW)


def one(name: str):
    out = handle(FIXTURES[name])
    assert len(out.items) == 1 and out.statuses == ()
    return out.items[0]


def test_whatsapp_is_a_hook_kind():
    assert get_adapter("whatsapp") is ADAPTER


def test_verification_get_echoes_the_challenge_as_plain_text():
    q = "hub.mode=subscribe&hub.verify_token=wa-verify&hub.challenge=1158201444"
    out = ADAPTER.handle(channel(), RawRequest("GET", f"{URL}?{q}", "", q, {}, b""), NOW)
    assert out.response.status == 200 and out.response.body == b"1158201444"
    assert out.response.content_type.startswith("text/plain")
    assert out.durable is False and out.items == ()


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1", 403),
        ("hub.mode=subscribe&hub.challenge=1", 403),
        ("hub.verify_token=wa-verify&hub.challenge=1", 400),
    ],
)
def test_verification_with_a_wrong_token_is_refused(query: str, status: int):
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), RawRequest("GET", f"{URL}?{query}", "", query, {}, b""), NOW)
    assert info.value.status == status


@pytest.mark.parametrize(
    "signature", ["", "sha256=00", "sha1=abc", "sha256=" + hmac_sha256_hex("other-secret", b"{}")]
)
def test_a_bad_or_missing_signature_is_401(signature: str):
    with pytest.raises(HookError) as info:
        ADAPTER.handle(channel(), signed(FIXTURES["text"], signature=signature), NOW)
    assert info.value.status == 401


def test_a_channel_without_an_app_secret_accepts_nothing():
    ch = channel(secrets={"verify_token": "x", "access_token": "y"})
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch, signed(FIXTURES["text"]), NOW)
    assert info.value.status == 401


def test_text_message_is_one_inbound_message_on_the_senders_thread():
    item = one("text")
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert item.kind == "message" and item.direction == "in"
    assert item.idempotency_key == f"whatsapp:{wamid}"
    assert item.provider_message_id == wamid
    assert item.sender.name == "Sheena Nelson"
    assert item.sender.phones == ("+16505551234",)
    assert item.sender.handles == ("whatsapp:16505551234",)
    assert item.thread is not None
    assert item.thread.key == "wa:16505551234" and item.thread.address == {"to": "16505551234"}
    assert item.data["text"] == "Does it come in another color?"
    assert item.data["attachments"] == []
    assert item.occurred_at == datetime.fromtimestamp(1749416383, tz=UTC)
    assert "another color" in item.summary


def test_image_keeps_media_id_mime_and_caption():
    item = one("image")
    assert item.data["text"] == "This is the one I mean"
    assert item.data["attachments"] == [
        {
            "type": "image",
            "id": "1003383421387256",
            "mime_type": "image/jpeg",
            "sha256": "SQBBmUoUEnc2qoaQ6Pmt/JvFWHXbnmpdXbqIMEf5Cn4=",
            "caption": "This is the one I mean",
        }
    ]
    assert item.summary.startswith("WhatsApp: [image]")


@pytest.mark.parametrize(
    ("name", "kind", "mime", "label"),
    [
        ("document", "document", "application/pdf", "[document invoice-1024.pdf]"),
        ("voice", "audio", "audio/ogg; codecs=opus", "[voice message]"),
        ("sticker", "sticker", "image/webp", "[sticker]"),
    ],
)
def test_other_media_keep_their_id_and_mime(name: str, kind: str, mime: str, label: str):
    item = one(name)
    (att,) = item.data["attachments"]
    assert att["type"] == kind and att["mime_type"] == mime and att["id"]
    assert item.data["text"] is None
    assert item.summary == f"WhatsApp: {label}"


def test_location_contacts_and_replies():
    loc = one("location")
    assert loc.data["location"]["latitude"] == pytest.approx(37.483307)
    assert loc.data["location"]["name"] == "Main Street Beans"
    assert loc.summary == "WhatsApp: [location] Main Street Beans"

    card = one("contacts")
    assert card.data["shared_contacts"] == [
        {"name": "Barbara J. Johnson", "phones": ["+1 (940) 555-1234"], "emails": ["bjohnson@example.com"]}
    ]
    assert card.sender.phones == ("+16505551234",)  # the shared card is not the sender

    button = one("button")
    assert button.data["text"] == "Unsubscribe"
    assert button.data["reply"] == {"type": "button", "payload": "Unsubscribe"}
    assert button.data["reply_to"].startswith("wamid.")

    reply = one("button_reply")
    assert reply.data["reply"] == {"type": "button_reply", "id": "cancel-button", "title": "Cancel"}
    assert reply.data["text"] == "Cancel"

    listed = one("list_reply")
    assert listed.data["reply"]["id"] == "priority_express"
    assert listed.data["reply"]["description"] == "Next Day to 2 Days"


def test_statuses_become_message_statuses():
    out = handle(FIXTURES["statuses"])
    assert out.items == () and out.discarded is None and out.durable
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA"
    assert [(s.status, s.idempotency_key) for s in out.statuses] == [
        (state, f"whatsapp:status:{wamid}:{state}") for state in ("sent", "delivered", "read")
    ]
    assert all(s.provider_message_id == wamid and s.error is None for s in out.statuses)
    assert out.statuses[2].occurred_at == datetime.fromtimestamp(1750263790, tz=UTC)


def test_a_failed_status_carries_the_providers_reason():
    (status,) = handle(FIXTURES["status_failed"]).statuses
    assert status.status == "failed"
    assert status.error == "Re-engagement message (131047)"


def test_messages_for_another_number_of_the_account_are_skipped():
    out = handle(FIXTURES["text"], channel(config={"phone_number_id": "999"}))
    assert out.items == () and out.discarded == "ignored"


def test_other_objects_and_fields_are_ignored():
    assert handle({"object": "page", "entry": []}).discarded == "ignored"
    doc = copy.deepcopy(FIXTURES["text"])
    doc["entry"][0]["changes"][0]["field"] = "account_update"
    assert handle(doc).discarded == "ignored"


def test_a_message_without_id_or_sender_is_422():
    doc = copy.deepcopy(FIXTURES["text"])
    del doc["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    with pytest.raises(HookError) as info:
        handle(doc)
    assert info.value.status == 422 and "messages.id" in info.value.errors
    doc = copy.deepcopy(FIXTURES["text"])
    doc["entry"][0]["changes"][0]["value"]["messages"][0]["from"] = "not-a-number"
    with pytest.raises(HookError) as info:
        handle(doc)
    assert "messages.from" in info.value.errors


def test_handle_is_deterministic_for_the_replay_after_the_durable_accept():
    assert handle(FIXTURES["image"]) == handle(FIXTURES["image"])


def test_hostile_variations_never_crash():
    for name in ("text", "image", "contacts", "list_reply", "status_failed"):
        for doc in mutations(FIXTURES[name], random.Random(name), 150):
            try:
                out = handle(doc)
            except HookError as exc:
                assert exc.status in (400, 415, 422)
                continue
            for item in out.items:
                json.dumps(item.data)
                assert item.occurred_at.tzinfo is not None
                assert item.thread is not None and item.thread.key.startswith("wa:")


def test_a_username_user_without_a_phone_is_known_by_the_business_scoped_id():
    item = one("username_only")
    assert item.sender.phones == () and item.sender.name == "Sheena"
    assert item.sender.handles == ("whatsapp:US.13491208655302741918",)
    assert item.thread is not None
    assert item.thread.key == "wa:US.13491208655302741918"
    assert item.thread.address == {
        "recipient": "US.13491208655302741918",
        "handles": ["whatsapp:US.13491208655302741918"],
    }
    assert item.data["username"] == "@sheena.n" and item.data["wa_id"] is None


def test_phone_and_business_scoped_id_together_keep_both_handles():
    item = one("phone_and_bsuid")
    assert item.sender.phones == ("+16505551234",)
    assert item.sender.handles == ("whatsapp:16505551234", "whatsapp:US.13491208655302741918")
    assert item.thread is not None and item.thread.key == "wa:16505551234"


def test_a_delivery_over_the_item_limit_is_422():
    doc = copy.deepcopy(FIXTURES["text"])
    (message,) = doc["entry"][0]["changes"][0]["value"]["messages"]
    doc["entry"][0]["changes"][0]["value"]["messages"] = [
        {**message, "id": f"wamid.{n}"} for n in range(MAX_ITEMS + 1)
    ]
    with pytest.raises(HookError) as info:
        handle(doc)
    assert info.value.status == 422 and "entry" in info.value.errors
