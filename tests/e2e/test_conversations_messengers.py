"""Answering WhatsApp, VK and Avito conversations from the card, end to end: the client writes
through the real hook, the conversation opens, the manager's answer goes out through the outbox
worker to a local stand-in of the provider's API (answering as the provider documents), the
provider's delivery reports (WhatsApp statuses) move the message on, and VK's echo of our own
answer (``message_reply``) is not a second copy."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.connectors.adapters.base import hmac_sha256_hex
from tests.support.conversations import conversations, messages
from tests.support.hub import Api, eventually, touches
from tests.support.provider_api import Answer, ProviderApi, Seen, provider_api

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messengers"
WA_SECRETS = {"app_secret": "wa-app-secret", "verify_token": "wa-verify", "access_token": "EAAG-test"}
WAMID_OUT = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


def fixtures(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def answer(admin: Api, conversation_id: str, text: str) -> dict[str, Any]:
    r = admin.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"text": text},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 202, r.text
    return dict(r.json())


def out_message(admin: Api, conversation_id: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        out = [m for m in messages(admin, conversation_id) if m["direction"] == "out"]
        return out[0] if len(out) == 1 and out[0]["status"] == status else None

    return eventually(probe, timeout=30)


@pytest.fixture
def api() -> Iterator[ProviderApi]:
    with provider_api() as server:
        yield server


# ---- WhatsApp ------------------------------------------------------------------------------------


def wa_post(channel: dict[str, Any], doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    sig = "sha256=" + hmac_sha256_hex(WA_SECRETS["app_secret"], body)
    r = httpx.post(
        channel["webhook_url"],
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig},
    )
    assert r.status_code == 200, r.text


def test_whatsapp_answer_from_the_card_goes_out_and_statuses_move_it(admin: Api, api: ProviderApi) -> None:
    api.default = lambda seen: Answer(
        200,
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
            "messages": [{"id": WAMID_OUT}],
        },
    )
    r = admin.post(
        "/api/v1/channels",
        json={
            "kind": "whatsapp",
            "name": "WhatsApp",
            "intake": "auto",
            "secrets": WA_SECRETS,
            "config": {"phone_number_id": "106540352242922", "api_base_url": f"{api.url}/v26.0"},
        },
    )
    assert r.status_code == 201, r.text
    channel = r.json()
    wa_post(channel, fixtures("whatsapp")["text"])
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)
    assert conv["kind"] == "whatsapp" and conv["unread"] == 1

    queued = answer(admin, conv["id"], "Yes, it comes in blue too.")
    sent = out_message(admin, conv["id"], "sent")
    assert sent["id"] == queued["id"] and sent["provider_message_id"] == WAMID_OUT
    (req,) = api.requests
    assert req.path == "/v26.0/106540352242922/messages"
    assert req.headers["authorization"] == "Bearer EAAG-test"
    assert req.json()["to"] == "16505551234" and req.json()["text"]["body"] == "Yes, it comes in blue too."

    statuses = copy.deepcopy(fixtures("whatsapp")["statuses"])
    for st in statuses["entry"][0]["changes"][0]["value"]["statuses"]:
        st["id"] = WAMID_OUT
    wa_post(channel, statuses)
    assert out_message(admin, conv["id"], "read")["id"] == queued["id"]


def test_whatsapp_outside_the_24_hour_window_fails_saying_to_use_a_template(
    admin: Api, api: ProviderApi
) -> None:
    api.default = lambda seen: Answer(
        400,
        {
            "error": {
                "message": "(#131047) Re-engagement message",
                "type": "OAuthException",
                "code": 131047,
                "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send"},
            }
        },
    )
    r = admin.post(
        "/api/v1/channels",
        json={
            "kind": "whatsapp",
            "name": "WA",
            "intake": "auto",
            "secrets": WA_SECRETS,
            "config": {"phone_number_id": "106540352242922", "api_base_url": api.url},
        },
    )
    channel = r.json()
    wa_post(channel, fixtures("whatsapp")["text"])
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)
    answer(admin, conv["id"], "Are you still interested?")
    failed = out_message(admin, conv["id"], "failed")
    assert "template" in failed["error"]
    assert len(api.requests) == 1  # not retried


# ---- VK ------------------------------------------------------------------------------------------


def test_vk_answer_goes_out_once_and_its_echo_is_not_a_second_copy(admin: Api, api: ProviderApi) -> None:
    api.default = lambda seen: Answer(200, {"response": 5400})
    secrets = {"secret": "vk-s3cret", "confirmation": "c0nf", "access_token": "vk1.a.token"}
    r = admin.post(
        "/api/v1/channels",
        json={
            "kind": "vk",
            "name": "VK",
            "intake": "auto",
            "secrets": secrets,
            "config": {"api_base_url": api.url},
        },
    )
    assert r.status_code == 201, r.text
    channel = r.json()
    assert httpx.post(channel["webhook_url"], json=fixtures("vk")["message_new_attachments"]).text == "ok"
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)

    answer(admin, conv["id"], "Реквизиты получили, спасибо!")
    sent = out_message(admin, conv["id"], "sent")
    assert sent["provider_message_id"] == "5400"
    (req,) = api.requests
    form = req.form()
    assert req.path == "/method/messages.send" and form["peer_id"] == "1234567"
    assert form["access_token"] == "vk1.a.token"

    echo = copy.deepcopy(fixtures("vk")["message_reply"])
    echo["event_id"] = uuid.uuid4().hex
    echo["object"].update(id=5400, text="Реквизиты получили, спасибо!", random_id=int(form["random_id"]))
    assert httpx.post(channel["webhook_url"], json=echo).text == "ok"
    manual = copy.deepcopy(fixtures("vk")["message_reply"])  # a manager answering in VK itself
    assert httpx.post(channel["webhook_url"], json=manual).text == "ok"
    eventually(lambda: len(messages(admin, conv["id"])) == 3, timeout=30)
    outs = [m for m in messages(admin, conv["id"]) if m["direction"] == "out"]
    assert sorted(m["provider_message_id"] for m in outs) == ["5321", "5400"]


# ---- Avito ---------------------------------------------------------------------------------------


def avito(seen: Seen) -> Answer:
    if seen.path == "/token":
        return Answer(200, fixtures("avito")["token_ok"])
    return Answer(200, fixtures("avito")["send_ok"])


def test_avito_answer_gets_a_token_then_posts_to_the_chat(admin: Api, api: ProviderApi) -> None:
    api.default = avito
    r = admin.post(
        "/api/v1/channels",
        json={
            "kind": "avito",
            "name": "Avito",
            "intake": "auto",
            "secrets": {"client_id": "cid", "client_secret": "csecret", "token": "t0k"},
            "config": {"user_id": 94235311, "api_base_url": api.url},
        },
    )
    assert r.status_code == 201, r.text
    channel = r.json()
    r = httpx.post(channel["webhook_url"], params={"token": "t0k"}, json=fixtures("avito")["text"])
    assert r.status_code == 200, r.text
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=30)
    answer(admin, conv["id"], "Да, продаётся.")
    sent = out_message(admin, conv["id"], "sent")
    assert sent["provider_message_id"] == "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
    token, posted = api.requests
    assert token.path == "/token" and token.form()["grant_type"] == "client_credentials"
    assert posted.path == "/messenger/v1/accounts/94235311/chats/u2i-PJIKqOpqbkqzeWcQ~L0ZOw/messages"
    assert posted.json() == {"message": {"text": "Да, продаётся."}, "type": "text"}

    def on_card() -> list[dict[str, Any]] | None:
        found = [i for i in touches(admin, conv["contact_id"]) if i["kind"] == "message"]
        return found if len(found) == 2 else None

    items = eventually(on_card, timeout=30)
    assert sorted(i["direction"] for i in items) == ["in", "out"]
