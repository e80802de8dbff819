"""Email capture end to end: a real Dovecot, the hub as a process, everything through the gateway.

An ``imap`` channel is created over the API; mail is APPENDed to the server's INBOX and Sent; the
tests read contacts, timelines and the channel's health back over HTTP.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from email.header import Header
from email.utils import formataddr, getaddresses
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests.support.dovecot import DovecotServer, append_message, dovecot_server, reset_uidvalidity
from tests.support.hub import Api, HubProcess, eventually
from tests.support.servers import delete_namespace_queues

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MAILBOX = "sales@corp.example"
OWN_DOMAIN = "corp.example"


# ---- building mail --------------------------------------------------------------------------


def mail(
    *,
    frm: str,
    to: str,
    subject: str,
    body: str,
    msg_id: str,
    cc: str | None = None,
    charset: str = "utf-8",
    headers: str = "",
) -> bytes:
    """One text/plain message; subject as an RFC 2047 encoded-word in ``charset``, body 8bit."""
    encoded_subject = Header(subject, charset).encode()

    def addresses(value: str) -> str:
        return ", ".join(formataddr(pair, charset) for pair in getaddresses([value]))

    head = (
        f"From: {addresses(frm)}\r\nTo: {addresses(to)}\r\n"
        + (f"Cc: {addresses(cc)}\r\n" if cc else "")
        + f"Subject: {encoded_subject}\r\nMessage-ID: <{msg_id}>\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0300\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n"
        f"{headers}\r\n"
    )
    return head.encode("ascii") + body.encode(charset) + b"\r\n"


def bounce(msg_id: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.client.ru>\r\n"
        f"To: {MAILBOX}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{msg_id}>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nDelivery to nobody@client.ru failed.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Final-Recipient: rfc822; nobody@client.ru\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--b1--\r\n"
    ).encode()


# ---- API helpers ----------------------------------------------------------------------------


def tenant_with_domains(root: Api, mongo_url: str, namespace: str) -> Api:
    """A fresh tenant whose own domain is known to the connectors service."""
    r = root.post("/api/v1/tenants", json={"name": f"Mail {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    tenant_id = r.json()["tenant_id"]
    admin = root.as_key(r.json()["api_key"])
    r = admin.patch("/api/v1/settings", json={"own_domains": [OWN_DOMAIN]})
    assert r.status_code == 200, r.text
    # The settings reach the connectors service as an event; wait for it so the mailbox's own
    # domain is never taken for a client.
    with MongoClient[dict[str, Any]](mongo_url) as client:
        db = client[f"{namespace}_connectors"]
        eventually(
            lambda: db.tenants.find_one({"_id": tenant_id, "settings.own_domains": OWN_DOMAIN}),
            timeout=15,
        )
    return admin


def create_channel(admin: Api, server: DovecotServer, **config: Any) -> dict[str, Any]:
    body = {
        "kind": "imap",
        "name": "Sales mailbox",
        "config": {
            "host": server.host,
            "port": server.port,
            "ssl": "none",
            "username": server.username,
            "address": MAILBOX,
            "poll_interval_s": 1,
            **config,
        },
        "secrets": {"password": server.password},
        "intake": "auto",
    }
    r = admin.post("/api/v1/channels", json=body)
    assert r.status_code == 201, r.text
    assert server.password not in r.text
    return r.json()


def health(admin: Api, channel_id: str) -> dict[str, Any]:
    r = admin.get(f"/api/v1/channels/{channel_id}")
    assert r.status_code == 200, r.text
    return r.json()["health"]


def wait_health(admin: Api, channel_id: str, timeout: float = 20.0, **want: Any) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        h = health(admin, channel_id)
        return h if all(h.get(k) == v for k, v in want.items()) else None

    return eventually(ok, timeout=timeout, interval=0.2)


def cursor_at(admin: Api, channel_id: str, folder: str, last_uid: int) -> dict[str, Any] | None:
    """The channel's health once its cursor for ``folder`` reached ``last_uid``."""
    h = health(admin, channel_id)
    cursor = (h.get("cursor") or {}).get(folder) or {}
    return h if cursor.get("last_uid") == last_uid else None


def contact_by_email(admin: Api, email: str) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/contacts", params={"email": email})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def emails_of(admin: Api, email: str) -> list[dict[str, Any]]:
    """The email items on the timeline of the one contact with ``email``."""
    found = contact_by_email(admin, email)
    assert len(found) == 1, f"{len(found)} contacts for one address"
    r = admin.get(f"/api/v1/contacts/{found[0]['id']}/timeline")
    assert r.status_code == 200, r.text
    return [i for i in r.json()["items"] if i["kind"] == "email"]


def wait_emails(admin: Api, email: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    def ok() -> list[dict[str, Any]] | None:
        if not contact_by_email(admin, email):
            return None
        items = emails_of(admin, email)
        return items if len(items) >= count else None

    return eventually(ok, timeout=timeout, interval=0.2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DovecotServer]:
    with dovecot_server() as s:
        yield s


# ---- tests ----------------------------------------------------------------------------------


def test_mailbox_capture_lands_once_on_the_right_cards_and_skips_non_client_mail(
    root: Api, hub: HubProcess, mongo_url: str, server: DovecotServer
) -> None:
    admin = tenant_with_domains(root, mongo_url, hub.namespace)
    partner = admin.post(
        "/api/v1/contacts", json={"name": "Ольга Партнёр", "emails": ["olga@partner.ru"]}
    ).json()

    inbox = [
        mail(
            frm="Иван Клиентов <ivan@client.ru>",
            to=f"Sales <{MAILBOX}>",
            subject="Запрос цены",
            body="Здравствуйте! Пришлите прайс.",
            msg_id="in-1@client.ru",
        ),
        mail(
            frm="Петр Крив <petr@client.ru>",
            to=MAILBOX,
            subject="Счёт на оплату",
            body="Добрый день, жду счёт до пятницы.",
            msg_id="koi8@client.ru",
            charset="koi8-r",
        ),
        mail(
            frm="Anna <anna@client.ru>",
            to=MAILBOX,
            subject="Договор поставки",
            body="Подписанный договор во вложении, ёлки-палки.",
            msg_id="cp1251@client.ru",
            charset="windows-1251",
        ),
        mail(
            frm="Иван Клиентов <ivan@client.ru>",
            to=MAILBOX,
            subject="Автоответ: Re: Запрос цены",
            body="Я в отпуске до понедельника.",
            msg_id="auto@client.ru",
            headers="Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n",
        ),
        bounce("bounce@mx.client.ru"),
        mail(
            frm=f"Коллега <colleague@{OWN_DOMAIN}>",
            to=MAILBOX,
            cc="Ольга <olga@partner.ru>",
            subject="Встреча с партнёром",
            body="Ольга, подтверждаю встречу.",
            msg_id="cc-only@corp.example",
        ),
    ]
    for raw in inbox:
        append_message(server, "INBOX", raw)
    append_message(
        server,
        "Sent",
        mail(
            frm=f"Sales <{MAILBOX}>",
            to="Иван Клиентов <ivan@client.ru>",
            subject="Re: Запрос цены",
            body="Иван, прайс во вложении.\n\n> Здравствуйте! Пришлите прайс.",
            msg_id="out-1@corp.example",
            headers="In-Reply-To: <in-1@client.ru>\r\nReferences: <in-1@client.ru>\r\n",
        ),
    )
    channel = create_channel(admin, server)
    cid = channel["id"]

    wait_health(admin, cid, received=5, skipped_auto_reply=1, skipped_bounce=1)

    # Inbound and outbound on the client's card, once each, threaded.
    ivan = wait_emails(admin, "ivan@client.ru", 2)
    assert len(ivan) == 2
    by_dir = {i["direction"]: i for i in ivan}
    assert set(by_dir) == {"in", "out"}
    assert by_dir["in"]["data"]["subject"] == "Запрос цены"
    assert by_dir["out"]["data"]["subject"] == "Re: Запрос цены"
    assert by_dir["out"]["data"]["thread_id"] == by_dir["in"]["data"]["message_id"] == "<in-1@client.ru>"
    assert contact_by_email(admin, "ivan@client.ru")[0]["name"] == "Иван Клиентов"

    # KOI8-R and Windows-1251 subjects, bodies and names decode.
    (petr,) = wait_emails(admin, "petr@client.ru", 1)
    assert petr["data"]["subject"] == "Счёт на оплату"
    assert "жду счёт до пятницы" in petr["summary"]
    assert contact_by_email(admin, "petr@client.ru")[0]["name"] == "Петр Крив"
    (anna,) = wait_emails(admin, "anna@client.ru", 1)
    assert anna["data"]["subject"] == "Договор поставки"
    assert "ёлки-палки" in anna["summary"]

    # A client only in Cc is matched to the existing contact; our own colleague is not a client.
    (cc_item,) = wait_emails(admin, "olga@partner.ru", 1)
    assert contact_by_email(admin, "olga@partner.ru")[0]["id"] == partner["id"]
    assert cc_item["data"]["subject"] == "Встреча с партнёром"
    assert contact_by_email(admin, f"colleague@{OWN_DOMAIN}") == []
    assert contact_by_email(admin, MAILBOX) == []

    # The auto-reply and the bounce are counted, not put on cards.
    assert contact_by_email(admin, "mailer-daemon@mx.client.ru") == []
    assert all(i["data"]["message_id"] != "<auto@client.ru>" for i in emails_of(admin, "ivan@client.ru"))

    # Health: the cursor per folder and the last successful sync.
    h = eventually(lambda: cursor_at(admin, cid, "INBOX", 6), timeout=10)
    assert h["last_success_at"] is not None
    assert h["cursor"]["INBOX"]["last_uid"] == 6
    assert h["cursor"]["Sent"]["last_uid"] == 1
    assert h["cursor"]["Sent"]["role"] == "sent"
    assert isinstance(h["cursor"]["INBOX"]["uidvalidity"], int)
    assert h["state"] == "ok"
    assert h.get("duplicates", 0) == 0


def test_message_arriving_while_the_poller_idles_shows_up_within_seconds(
    root: Api, hub: HubProcess, mongo_url: str, server: DovecotServer
) -> None:
    admin = tenant_with_domains(root, mongo_url, hub.namespace)
    # A long poll interval: only IDLE can bring the message in within seconds.
    cid = create_channel(admin, server, poll_interval_s=60)["id"]
    wait_health(admin, cid, idle=True)
    started = time.monotonic()
    append_message(
        server,
        "INBOX",
        mail(
            frm="Дмитрий <dmitry@client.ru>",
            to=MAILBOX,
            subject="Срочно",
            body="Перезвоните, пожалуйста.",
            msg_id="live@client.ru",
        ),
    )
    (item,) = wait_emails(admin, "dmitry@client.ru", 1, timeout=10)
    assert time.monotonic() - started < 6.0
    assert item["direction"] == "in"
    assert item["data"]["subject"] == "Срочно"


def test_restart_replicas_and_uidvalidity_change_produce_no_duplicates(
    rabbit: str, mongo_url: str, tmp_path: Path, server: DovecotServer
) -> None:
    first = HubProcess(rabbit_url=rabbit, mongo_url=mongo_url, data_dir=tmp_path).start()
    replicas = [first]
    try:
        root = Api(first.url, first.root_token)
        admin = tenant_with_domains(root, mongo_url, first.namespace)
        for n in (1, 2):
            append_message(
                server,
                "INBOX",
                mail(
                    frm="Клиент <client@client.ru>",
                    to=MAILBOX,
                    subject=f"Письмо {n}",
                    body=f"Текст {n}",
                    msg_id=f"r{n}@client.ru",
                ),
            )
        append_message(
            server,
            "Sent",
            mail(
                frm=MAILBOX,
                to="client@client.ru",
                subject="Ответ",
                body="Ответ клиенту",
                msg_id="r-out@corp.example",
            ),
        )
        cid = create_channel(admin, server)["id"]
        wait_health(admin, cid, received=3)
        assert len(wait_emails(admin, "client@client.ru", 3)) == 3
        first.stop()

        # Mail arrives while the hub is down; a new process on the same data picks up from the cursor.
        append_message(
            server,
            "INBOX",
            mail(
                frm="Клиент <client@client.ru>",
                to=MAILBOX,
                subject="Письмо 3",
                body="Текст 3",
                msg_id="r3@client.ru",
            ),
        )
        second = first.replica()
        replicas.append(second)
        second.start()
        admin = Api(second.url, admin.key)
        wait_health(admin, cid, received=4)
        h = eventually(lambda: cursor_at(admin, cid, "INBOX", 3), timeout=10)
        assert h.get("duplicates", 0) == 0
        old_uidvalidity = h["cursor"]["INBOX"]["uidvalidity"]

        # A second replica on the same data: the lease keeps the mailbox to one poller.
        third = first.replica()
        replicas.append(third)
        third.start()
        append_message(
            server,
            "INBOX",
            mail(
                frm="Клиент <client@client.ru>",
                to=MAILBOX,
                subject="Письмо 4",
                body="Текст 4",
                msg_id="r4@client.ru",
            ),
        )
        wait_health(admin, cid, received=5)
        time.sleep(2.5)  # time for a second poller, were there one, to hand it over again
        with MongoClient[dict[str, Any]](mongo_url) as client:
            leases = list(client[f"{first.namespace}_connectors"].imap_leases.find({"_id": cid}))
        assert len(leases) == 1
        assert health(admin, cid).get("duplicates", 0) == 0

        # The server renumbers INBOX: everything is read again and recognised by Message-ID.
        _, new_uidvalidity = reset_uidvalidity(server, "INBOX")
        assert new_uidvalidity != old_uidvalidity
        wait_health(admin, cid, duplicates=4)
        # the cursor moves to the new UIDVALIDITY at once, then up to the last message
        h = eventually(
            lambda: (
                (hh := health(admin, cid))["cursor"]["INBOX"]["uidvalidity"] == new_uidvalidity
                and hh["cursor"]["INBOX"]["last_uid"] == 4
                and hh
            ),
            timeout=15,
        )
        assert h["cursor"]["INBOX"]["last_uid"] == 4
        assert h["received"] == 5

        items = emails_of(admin, "client@client.ru")
        subjects = sorted(i["data"]["subject"] for i in items)
        assert subjects == ["Ответ", "Письмо 1", "Письмо 2", "Письмо 3", "Письмо 4"]
    finally:
        for proc in reversed(replicas):
            proc.stop()
        delete_namespace_queues(rabbit, first.namespace)


def test_channel_password_is_stored_encrypted(
    root: Api, hub: HubProcess, mongo_url: str, server: DovecotServer
) -> None:
    admin = tenant_with_domains(root, mongo_url, hub.namespace)
    cid = create_channel(admin, server)["id"]
    with MongoClient[dict[str, Any]](mongo_url) as client:
        doc = client[f"{hub.namespace}_connectors"].channels.find_one({"_id": cid})
    assert doc is not None
    stored = repr(doc)
    assert server.password not in stored
    assert base64.b64encode(server.password.encode()).decode() not in stored
    assert admin.get(f"/api/v1/channels/{cid}").json()["secrets_set"] == ["password"]


def test_a_mailbox_that_cannot_log_in_says_so_in_its_health(
    root: Api, hub: HubProcess, mongo_url: str, server: DovecotServer
) -> None:
    admin = tenant_with_domains(root, mongo_url, hub.namespace)
    body = {
        "kind": "imap",
        "name": "Wrong password",
        "config": {"host": server.host, "port": server.port, "ssl": "none", "username": server.username},
        "secrets": {"password": "not-the-password"},
        "intake": "auto",
    }
    cid = admin.post("/api/v1/channels", json=body).json()["id"]
    h = wait_health(admin, cid, state="failing", last_error="auth: login failed")
    assert h["last_error_at"] is not None
    assert h["last_success_at"] is None

    # Fixing the password restarts the poller, which then syncs.
    r = admin.patch(f"/api/v1/channels/{cid}", json={"secrets": {"password": server.password}})
    assert r.status_code == 200, r.text
    h = wait_health(admin, cid, state="ok")
    assert h["last_success_at"] is not None


def test_deactivating_a_channel_stops_its_poller(
    root: Api, hub: HubProcess, mongo_url: str, server: DovecotServer
) -> None:
    admin = tenant_with_domains(root, mongo_url, hub.namespace)
    cid = create_channel(admin, server)["id"]
    with MongoClient[dict[str, Any]](mongo_url) as client:
        leases = client[f"{hub.namespace}_connectors"].imap_leases
        eventually(lambda: leases.find_one({"_id": cid}), timeout=10)
        r = admin.patch(f"/api/v1/channels/{cid}", json={"active": False})
        assert r.status_code == 200, r.text
        eventually(lambda: leases.find_one({"_id": cid}) is None, timeout=10)
    append_message(
        server,
        "INBOX",
        mail(frm="Late <late@client.ru>", to=MAILBOX, subject="x", body="y", msg_id="late@client.ru"),
    )
    time.sleep(2.5)
    assert contact_by_email(admin, "late@client.ru") == []


def test_forwarding_mailbox_attributes_forwards_to_the_original_sender(
    root: Api, hub: HubProcess, mongo_url: str, server: DovecotServer
) -> None:
    admin = tenant_with_domains(root, mongo_url, hub.namespace)
    # A manager forwards a client's mail to the hub's mailbox...
    append_message(
        server,
        "INBOX",
        mail(
            frm=f"Менеджер <manager@{OWN_DOMAIN}>",
            to=f"crm@{OWN_DOMAIN}",
            subject="Fwd: Заказ на 10 штук",
            body=(
                "Коллеги, заведите клиента.\n\n"
                "---------- Forwarded message ---------\n"
                "From: Клиент Пересланный <fwd@client.ru>\n"
                "Date: Wed, 25 Nov 2026 09:15:00 +0300\n"
                "Subject: Заказ на 10 штук\n"
                f"To: manager@{OWN_DOMAIN}\n\n"
                "Хочу заказать 10 штук.\n"
            ),
            msg_id="fwd-1@corp.example",
        ),
    )
    # ...and BCCs it on mail of their own to another client.
    append_message(
        server,
        "INBOX",
        mail(
            frm=f"Менеджер <manager@{OWN_DOMAIN}>",
            to="Покупатель <buyer@client.ru>",
            subject="Коммерческое предложение",
            body="Высылаю КП.",
            msg_id="bcc-1@corp.example",
        ),
    )
    cid = create_channel(admin, server, forward_mode=True, address=f"crm@{OWN_DOMAIN}")["id"]
    wait_health(admin, cid, received=2)

    (fwd,) = wait_emails(admin, "fwd@client.ru", 1)
    assert fwd["direction"] == "in"
    assert fwd["data"]["subject"] == "Заказ на 10 штук"
    assert fwd["data"]["forwarded"] is True
    assert "Хочу заказать 10 штук" in fwd["summary"]
    assert contact_by_email(admin, "fwd@client.ru")[0]["name"] == "Клиент Пересланный"

    (bcc,) = wait_emails(admin, "buyer@client.ru", 1)
    assert bcc["direction"] == "out"
    assert contact_by_email(admin, f"manager@{OWN_DOMAIN}") == []
