"""Email conversations end to end: a real Dovecot mailbox read by the hub over IMAP, answers
sent by SMTP to a real SMTP server (aiosmtpd) that files the sent copy in the mailbox's Sent
folder, as mail providers do. The answer is threaded, sent once, and its Sent copy seen over IMAP
is the same message, not a second one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_imap_hub import (
    MAILBOX,
    create_channel,
    cursor_at,
    mail,
    tenant_with_domains,
    wait_health,
)
from tests.support.conversations import conversations, messages
from tests.support.dovecot import DovecotServer, append_message, dovecot_server
from tests.support.hub import Api, HubProcess, eventually, touches
from tests.support.smtp_server import SmtpStandIn, smtp_stand_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def server() -> Iterator[DovecotServer]:
    with dovecot_server() as s:
        with s.client() as c:  # the folder the provider files sent mail in
            c.create_folder("Sent")
        yield s


@pytest.fixture
def smtp(server: DovecotServer) -> Iterator[SmtpStandIn]:
    with smtp_stand_in(server) as s:
        yield s


def test_email_answer_is_threaded_sent_once_and_its_sent_copy_is_the_same_message(
    root: Api, hub: HubProcess, mongo_url: str, server: DovecotServer, smtp: SmtpStandIn
) -> None:
    admin = tenant_with_domains(root, mongo_url, hub.namespace)
    channel = create_channel(admin, server, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_ssl="none")
    client = f"client-{uuid.uuid4().hex[:8]}@client.example"
    first_id = f"q-{uuid.uuid4().hex}@client.example"
    append_message(
        server,
        "INBOX",
        mail(
            frm=f"Анна <{client}>",
            to=MAILBOX,
            subject="Вопрос по заказу",
            body="Когда доставка?",
            msg_id=first_id,
        ),
    )
    (conv,) = eventually(lambda: conversations(admin, channel_id=channel["id"]), timeout=40)
    assert conv["kind"] == "imap" and conv["unread"] == 1 and conv["awaiting_reply_since"]
    (inbound,) = messages(admin, conv["id"])
    assert inbound["subject"] == "Вопрос по заказу" and inbound["provider_message_id"] == f"<{first_id}>"
    assert "Когда доставка?" in (inbound["text"] or "")

    r = admin.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Завтра до обеда."},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 202, r.text
    answer_id = r.json()["id"]

    def sent() -> dict[str, Any] | None:
        out = [m for m in messages(admin, conv["id"]) if m["id"] == answer_id]
        return out[0] if out and out[0]["status"] == "sent" else None

    answer = eventually(sent, timeout=40)
    (got,) = smtp.messages()
    assert smtp.logins == [server.username]  # the IMAP login and password, as nothing else was given
    assert got["Message-ID"] == answer["provider_message_id"]
    assert got["In-Reply-To"] == f"<{first_id}>" and f"<{first_id}>" in got["References"]
    assert str(got["Subject"]) == "Re: Вопрос по заказу"
    assert got["To"] == client and got["From"] == MAILBOX
    assert "Завтра до обеда." in got.get_content()

    # The provider filed the copy in Sent; the poller reads it: still one answer, one item
    eventually(lambda: cursor_at(admin, channel["id"], "Sent", 1), timeout=40)
    wait_health(admin, channel["id"], timeout=40, received=2)  # the Sent copy was handled too
    contact_id = conv["contact_id"]

    def card() -> list[dict[str, Any]] | None:
        items = [i for i in touches(admin, contact_id) if i["kind"] == "email"]
        return items if len(items) >= 2 else None

    items = eventually(card, timeout=30)
    assert sorted(i["direction"] for i in items) == ["in", "out"]
    assert len(messages(admin, conv["id"])) == 2
    assert len(smtp.received) == 1

    # the customer answers our answer: the same conversation (threaded by References)
    append_message(
        server,
        "INBOX",
        mail(
            frm=client,
            to=MAILBOX,
            subject="Re: Вопрос по заказу",
            body="Спасибо!",
            msg_id=f"r-{uuid.uuid4().hex}@client.example",
            headers=f"In-Reply-To: {answer['provider_message_id']}\r\n"
            f"References: <{first_id}> {answer['provider_message_id']}\r\n",
        ),
    )
    eventually(lambda: len(messages(admin, conv["id"])) == 3, timeout=40)
    assert len(conversations(admin, channel_id=channel["id"])) == 1
    assert len([i for i in touches(admin, contact_id) if i["kind"] == "email"]) == 3


def test_starting_an_email_conversation_from_the_card(
    root: Api, hub: HubProcess, mongo_url: str, server: DovecotServer, smtp: SmtpStandIn
) -> None:
    admin = tenant_with_domains(root, mongo_url, hub.namespace)
    channel = create_channel(admin, server, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_ssl="none")
    client = f"new-{uuid.uuid4().hex[:8]}@client.example"
    contact = admin.post("/api/v1/contacts", json={"name": "Олег", "emails": [client]}).json()
    body = {"channel_id": channel["id"], "text": "Добрый день! Ваш счёт готов.", "subject": "Счёт №15"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    r = admin.post(f"/api/v1/contacts/{contact['id']}/messages", json=body, headers=key)
    assert r.status_code == 202, r.text
    msg = r.json()
    again = admin.post(f"/api/v1/contacts/{contact['id']}/messages", json=body, headers=key)
    assert again.status_code == 202 and again.json()["id"] == msg["id"]
    assert msg["subject"] == "Счёт №15" and msg["status"] in ("queued", "sent")
    eventually(lambda: smtp.received, timeout=40)
    (got,) = smtp.messages()
    assert got["To"] == client and str(got["Subject"]) == "Счёт №15" and got["In-Reply-To"] is None
    (conv,) = conversations(admin, contact_id=contact["id"])
    assert conv["channel_id"] == channel["id"] and conv["awaiting_reply_since"] is None
    eventually(lambda: cursor_at(admin, channel["id"], "Sent", 1), timeout=40)
    eventually(lambda: [i for i in touches(admin, contact["id"]) if i["kind"] == "email"], timeout=30)
    assert len(messages(admin, conv["id"])) == 1
    assert len([i for i in touches(admin, contact["id"]) if i["kind"] == "email"]) == 1
    assert len(smtp.received) == 1
