"""Where a new conversation goes when a manager starts one from the card, and the Message-ID of
an email we send.

A conversation started from the card has no inbound message to take its address from: it is
built from the contact's identity on the channel's network (a Telegram user id is also the id of
the private chat with the bot; a WhatsApp number is the phone without ``+``; a VK user is the
peer). An email starts a thread of its own, keyed by the first message's Message-ID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NewThread:
    key: str
    address: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, list[str]] = field(default_factory=dict)
    """The customer's identity on it (``handles``/``emails``/``phones``), for the timeline item."""


class NoAddress(Exception):
    """The contact has no identity on the channel's network (no email for an email channel...)."""


def _handle(handles: Sequence[str], network: str) -> str | None:
    return next((h.split(":", 1)[1] for h in handles if h.startswith(f"{network}:")), None)


def message_id_for(idempotency_key: str, mailbox: str) -> str:
    """A Message-ID fixed by the send's key: a resent copy is the same message, and the copy the
    mail server files in Sent is recognised by it. ``<crm.<digest>@<mailbox domain>>``."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    domain = mailbox.rsplit("@", 1)[-1] if "@" in mailbox else "crm.invalid"
    return f"<crm.{digest}@{domain}>"


def new_thread(
    kind: str, contact: Mapping[str, Any], *, subject: str | None, first_message_id: str | None = None
) -> NewThread:
    """The thread a manager's first message to ``contact`` on a ``kind`` channel opens."""
    handles = list(contact.get("handles") or [])
    phones = list(contact.get("phones") or [])
    emails = list(contact.get("emails") or [])
    if kind == "telegram":
        user = _handle(handles, "telegram")
        if user is None:
            raise NoAddress("the contact has no Telegram account known to the hub (they must write first)")
        return NewThread(f"chat:{user}", {"chat_id": int(user)}, {"handles": [f"telegram:{user}"]})
    if kind == "vk":
        user = _handle(handles, "vk")
        if user is None:
            raise NoAddress("the contact has no VK account known to the hub")
        return NewThread(f"peer:{user}", {"peer_id": int(user)}, {"handles": [f"vk:{user}"]})
    if kind == "whatsapp":
        if not phones:
            raise NoAddress("the contact has no phone number")
        wa_id = phones[0].lstrip("+")
        return NewThread(f"wa:{wa_id}", {"to": wa_id}, {"phones": [phones[0]]})
    if kind == "imap":
        if not emails:
            raise NoAddress("the contact has no email address")
        if not first_message_id:
            raise ValueError("an email thread needs the first message's Message-ID")
        address = {"to": [emails[0]], "subject": subject or "", "references": []}
        return NewThread(f"mail:{first_message_id}", address, {"emails": [emails[0]]})
    raise NoAddress(f"a {kind} channel cannot start a conversation")
