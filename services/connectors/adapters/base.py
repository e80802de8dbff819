"""The contract every inbound-hook adapter implements.

An adapter knows one provider: how it signs requests, what handshakes it expects, and how its
payloads map onto our unified :class:`Captured` interaction. Adapters are pure: no I/O, no clock of
their own (``now`` is passed in), no database. The ingress (``services.connectors.ingress``) does
the I/O around them:

1. ``adapter.handle(channel, request, now)`` runs inside the HTTP request. It verifies the signature
   on the raw bytes, answers handshakes, parses, and returns a :class:`HookOutcome`. It raises
   :class:`HookError` (401/400/415/422...) for bad input. It must be fast: no network.
2. When the outcome is accepted, the ingress makes the raw request durable (broker confirm) and
   only then sends ``outcome.response``.
3. Later, a consumer calls ``adapter.handle`` again on the stored raw request (same result, it is
   deterministic) and, when ``outcome.needs_enrichment`` is set, ``adapter.enrich(...)`` which may do
   network I/O (e.g. Meta's Graph API) and may raise :class:`RetryLater`.

Phones and emails are returned as the provider wrote them; the connectors service normalises them
(E.164 with the tenant's default region, lower-case email) before publishing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs

InteractionKind = Literal["call", "email", "form", "ad_lead", "message"]
Direction = Literal["in", "out"]
CallStatus = Literal["answered", "missed", "busy", "failed", "ringing", "in_progress"]

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")


@dataclass(frozen=True)
class RawRequest:
    """One HTTP request exactly as it reached the hook URL."""

    method: str
    url: str
    """The full public URL the provider called (``CRM_PUBLIC_URL`` + path + query): Twilio signs it."""
    subpath: str
    """What follows ``/hooks/<channel id>`` (``""``, ``"/events/call"``...)."""
    query: str
    """The raw query string, without ``?``."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def query_params(self) -> dict[str, str]:
        """The query string as a flat dict (the last value wins)."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}


@dataclass(frozen=True)
class ChannelView:
    """What an adapter may know about the channel it serves (secrets already decrypted)."""

    id: str
    tenant_id: str
    kind: str
    config: Mapping[str, Any]
    secrets: Mapping[str, str]


@dataclass(frozen=True)
class Sender:
    """Who the interaction is from (inbound) or to (outbound): the client, never our own side."""

    name: str | None = None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    handles: tuple[str, ...] = ()
    """Messenger identities, ``<network>:<user id>`` (``telegram:123``, ``vk:456``): people who
    write without ever giving a phone are still recognised the next time."""


@dataclass(frozen=True)
class Thread:
    """The channel thread a message belongs to: what a conversation is keyed by and answered on."""

    key: str
    """Stable within the channel: ``chat:<chat id>`` (Telegram), ``wa:<wa_id>`` (WhatsApp),
    ``peer:<peer_id>`` (VK), ``chat:<chat id>`` (Avito), ``mail:<root Message-ID>`` (email)."""
    address: dict[str, Any] = field(default_factory=dict)
    """What a sender needs to answer on it (``chat_id``; ``to`` + ``references`` + ``subject``...)."""


@dataclass(frozen=True)
class Captured:
    """One unified interaction, as an adapter extracts it from a provider's payload."""

    idempotency_key: str
    """The provider's own id of this event, prefixed by the provider: ``twilio:<CallSid>:<seq>``."""
    kind: InteractionKind
    direction: Direction
    occurred_at: datetime
    sender: Sender
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    """Kind-specific data as API.md names it: ``fields``, ``utm``, ``status``, ``duration_s``..."""
    subject_key: str | None = None
    """Events about the same real-world thing share it (``twilio:call:<CallSid>``): the contacts
    service merges them into one timeline item, whatever order they arrive in."""
    utm: dict[str, str] = field(default_factory=dict)
    """First-touch attribution (``utm_source``...``utm_term``) when the provider has it."""
    thread: Thread | None = None
    """Set on messages (and email) that belong to a conversation the manager can answer."""
    provider_message_id: str | None = None
    """The provider's id of this message (Telegram ``message_id``, WhatsApp ``wamid``...)."""


MessageState = Literal["sent", "delivered", "read", "failed"]


@dataclass(frozen=True)
class MessageStatus:
    """A provider's report on a message we sent (WhatsApp ``statuses``, delivery receipts)."""

    idempotency_key: str
    provider_message_id: str
    status: MessageState
    occurred_at: datetime
    error: str | None = None
    """The provider's reason, for ``failed``."""


@dataclass(frozen=True)
class HookResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class HookOutcome:
    """What one hook request amounts to."""

    response: HookResponse = field(default_factory=HookResponse)
    items: tuple[Captured, ...] = ()
    durable: bool = True
    """False for handshakes (challenge echoes, confirmation strings): nothing to keep."""
    discarded: str | None = None
    """Set when the request is accepted but creates nothing: ``"spam"`` (honeypot), ``"test"``
    (Google Ads ``is_test``, Tilda's ``test=test`` probe). Counted in channel health."""
    needs_enrichment: bool = False
    """True when ``enrich`` must run (after the durable accept) to produce the items."""
    context: dict[str, Any] = field(default_factory=dict)
    """Anything ``enrich`` needs (e.g. Meta ``leadgen_id`` list)."""
    statuses: tuple[MessageStatus, ...] = ()
    """Delivery reports on messages we sent, carried in the same hook (WhatsApp)."""


class HookError(Exception):
    """A request the adapter refuses; becomes a problem+json response."""

    def __init__(self, status: int, title: str, detail: str, errors: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or {}


class RetryLater(Exception):
    """Enrichment could not finish now (provider down, lead not readable yet); try again later."""


class Adapter(Protocol):
    kind: str

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome: ...

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        """Network step after the durable accept; ``http`` is an ``httpx.AsyncClient``."""
        ...


# ---- helpers shared by adapters -------------------------------------------------------------


def bad_signature(detail: str = "The request signature does not match.") -> HookError:
    return HookError(401, "Invalid signature", detail)


def hmac_sha256_hex(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    a_b = a.encode() if isinstance(a, str) else a
    b_b = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_b, b_b)


def require_hmac_header(request: RawRequest, secret: str, header: str = "x-signature") -> None:
    """``X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` (our ``form``/``asterisk`` scheme)."""
    got = (request.header(header) or "").strip()
    if not got.startswith("sha256="):
        raise bad_signature(f"{header} header missing or not of the form sha256=<hex>.")
    if not constant_time_equal(got[7:].lower(), hmac_sha256_hex(secret, request.body)):
        raise bad_signature()
