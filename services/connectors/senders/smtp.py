"""Email answers by SMTP, threaded, for ``imap`` channels.

Config (API.md): ``smtp_host``, ``smtp_port`` (default 465 for ``tls``, 587 otherwise),
``smtp_ssl`` (``tls``/``starttls``/``none``, default ``tls``), ``smtp_username`` (default the IMAP
``username``); the password is ``secrets.smtp_password``, else the IMAP ``secrets.password``. The
host passes the outbound guard (mail ports) and the socket goes to the checked address, as IMAP's.

The message: ``From`` the mailbox (``config.address``, else the login), ``To`` the thread's
customer, the thread's subject (``Re: ...``), ``In-Reply-To`` and ``References`` of the thread,
and a ``Message-ID`` fixed by the send's key (:func:`message_id_for`): a send repeated after a
crash is the same message, and the copy the mail server files in Sent, seen later over IMAP, is
recognised as this one (``imap:<channel>:<Message-ID>``) instead of becoming a second item.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from services.connectors.adapters.base import ChannelView
from services.connectors.conversations.domain.threads import message_id_for
from services.connectors.mail.ingest import mailbox_address
from services.connectors.outbound import SMTP_PORTS, mail_security
from services.connectors.senders.base import OutboundMessage, SendFailed, SendResult
from shared.netguard import PinnedContext, UrlGuard, UrlRefused

TIMEOUT_S = 30.0


def build_message(config: dict[str, Any], message: OutboundMessage, now: datetime) -> EmailMessage:
    mailbox = mailbox_address(config)
    address = message.address
    msg = EmailMessage()
    msg["From"] = mailbox
    msg["To"] = ", ".join(str(a) for a in address.get("to") or [])
    msg["Subject"] = message.subject or ""
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id_for(message.idempotency_key, mailbox)
    if address.get("in_reply_to"):
        msg["In-Reply-To"] = str(address["in_reply_to"])
    references = [str(r) for r in address.get("references") or []]
    if references:
        msg["References"] = " ".join(references)
    msg.set_content(message.text)
    return msg


def _guard_of(http: Any) -> UrlGuard:
    """The outbound guard of the connectors' HTTP client (the same rules for SMTP as for every
    other call; strict when the client has none)."""
    guard = getattr(getattr(http, "_transport", None), "guard", None)
    return guard if isinstance(guard, UrlGuard) else UrlGuard()


class SmtpSender:
    kind = "imap"
    resend_safe = True

    async def send(
        self, channel: ChannelView, message: OutboundMessage, http: Any, now: datetime
    ) -> SendResult:
        config = dict(channel.config)
        if not config.get("smtp_host"):
            raise SendFailed("the channel has no config.smtp_host to send with", retryable=False)
        if not message.address.get("to"):
            raise SendFailed("the conversation has no address to answer", retryable=False)
        if not mailbox_address(config):
            raise SendFailed(
                "the channel has no sender address (config.address or username)", retryable=False
            )
        msg = build_message(config, message, now)
        await asyncio.to_thread(self._deliver, config, dict(channel.secrets), msg, _guard_of(http))
        return SendResult(provider_message_id=str(msg["Message-ID"]), status="sent")

    def _deliver(
        self, config: dict[str, Any], secrets: dict[str, str], msg: EmailMessage, guard: UrlGuard
    ) -> None:
        host = str(config["smtp_host"]).strip()
        mode = mail_security(config, "smtp_ssl")
        try:
            port = int(config.get("smtp_port") or (465 if mode == "tls" else 587))
        except (TypeError, ValueError):
            raise SendFailed("config.smtp_port must be a number", retryable=False) from None
        try:
            target = guard.resolve_sync(host, port, ports=SMTP_PORTS)
        except UrlRefused as exc:
            raise SendFailed(f"config.smtp_host {exc}", retryable=False) from exc
        context: Any = PinnedContext(ssl.create_default_context(), host)
        username = str(config.get("smtp_username") or config.get("username") or "")
        password = secrets.get("smtp_password") or secrets.get("password") or ""
        try:
            client: smtplib.SMTP
            if mode == "tls":
                client = smtplib.SMTP_SSL(target.address, port, timeout=TIMEOUT_S, context=context)
            else:
                client = smtplib.SMTP(target.address, port, timeout=TIMEOUT_S)
            with client:
                client.ehlo()
                if mode == "starttls":
                    client.starttls(context=context)
                    client.ehlo()
                if username and password and client.has_extn("auth"):
                    client.login(username, password)
                client.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise SendFailed(f"SMTP login failed ({exc.smtp_code})", retryable=False) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise SendFailed(f"the SMTP server refused the recipient ({codes})", retryable=False) from exc
        except smtplib.SMTPResponseException as exc:
            retry = 400 <= exc.smtp_code < 500  # 4xx: try again later; 5xx: permanent
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
            raise SendFailed(f"SMTP {exc.smtp_code}: {text[:200]}".rstrip(": "), retryable=retry) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise SendFailed(f"SMTP server unreachable ({type(exc).__name__})", retryable=True) from exc


SENDER = SmtpSender()
