"""The contract every outbound sender implements (the mirror of an inbound adapter).

A sender knows how one provider takes a message for a thread (Telegram ``sendMessage``, WhatsApp
Cloud API ``/messages``, VK ``messages.send``, Avito messenger, SMTP). It is called by the outbox
worker, never inside an HTTP request. It does the network call and nothing else: no database, no
clock of its own. It returns :class:`SendResult`, or raises :class:`SendFailed` saying whether the
attempt may be repeated (``retryable``) and when (``retry_after_s``, from the provider's rate limit).

Exactly once: the worker records the attempt before calling and passes a stable
``idempotency_key``; a sender whose provider deduplicates (VK ``random_id``, an SMTP ``Message-ID``
the IMAP Sent copy is matched by) derives that from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from services.connectors.adapters.base import ChannelView


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    url: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class OutboundMessage:
    idempotency_key: str
    """Stable for one manager's send, across restarts."""
    conversation_id: str
    thread_key: str
    address: dict[str, Any]
    """The thread's address, as the inbound adapter gave it (:class:`~..adapters.base.Thread`)."""
    text: str
    subject: str | None = None
    attachments: tuple[Attachment, ...] = ()
    template: dict[str, Any] | None = None
    """A provider template (WhatsApp outside the 24-hour window)."""


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    status: Literal["sent", "delivered", "read"] = "sent"
    extra: dict[str, Any] = field(default_factory=dict)


class SendFailed(Exception):
    """The provider refused or could not be reached."""

    def __init__(self, reason: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Sender(Protocol):
    kind: str

    async def send(
        self, channel: ChannelView, message: OutboundMessage, http: Any, now: datetime
    ) -> SendResult:
        """``http`` is the connectors' guarded ``httpx.AsyncClient``."""
        ...
