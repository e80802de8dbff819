"""A real SMTP server for the tests (aiosmtpd), standing in for a mail provider's submission
server: it requires the mailbox's login (AUTH PLAIN/LOGIN, over plain text on loopback), accepts
the message, and files a copy in the sender's Sent folder on the test Dovecot, as Gmail or Yandex
do, so the hub's IMAP poller later sees its own answer there.

Every accepted message is kept (``received``: the raw bytes the hub sent).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from shared.localmongo import free_port
from tests.support.dovecot import DovecotServer, append_message


class SmtpStandIn:
    def __init__(self, mailbox: DovecotServer, sent_folder: str = "Sent") -> None:
        self.mailbox = mailbox
        self.sent_folder = sent_folder
        self.received: list[bytes] = []
        self.logins: list[str] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_required=True,
            auth_require_tls=False,
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if login == self.mailbox.username and password == self.mailbox.password:
                with self._lock:
                    self.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        with self._lock:
            self.received.append(raw)
        append_message(self.mailbox, self.sent_folder, raw, flags=(b"\\Seen",))
        return "250 2.0.0 Ok: queued"

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            raws = list(self.received)
        return [message_from_bytes(r, policy=policy.default) for r in raws]  # type: ignore[misc]

    def start(self) -> SmtpStandIn:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


@contextmanager
def smtp_stand_in(mailbox: DovecotServer) -> Iterator[SmtpStandIn]:
    server = SmtpStandIn(mailbox).start()
    try:
        yield server
    finally:
        server.stop()
