"""WhatsApp Business Cloud API webhooks (the ``messages`` field of a WhatsApp Business Account).

Handshake: Meta verifies the callback URL with ``GET ?hub.mode=subscribe&hub.verify_token=...
&hub.challenge=...``; when the token equals ``secrets.verify_token`` the challenge is echoed as
plain text (nothing durable), a wrong token is 403.

Notifications: ``POST`` JSON ``{"object": "whatsapp_business_account", "entry": [{"id",
"changes": [{"field": "messages", "value": {"messaging_product", "metadata":
{"display_phone_number", "phone_number_id"}, "contacts": [{"profile": {"name"}, "wa_id"}],
"messages": [...], "statuses": [...]}}]}]}``, signed with ``X-Hub-Signature-256: sha256=<hex
HMAC-SHA256 of the raw body keyed with the app secret>`` (always required: without
``secrets.app_secret`` nothing is accepted, 401).

- Each of ``messages`` (text, image/video/document/audio/sticker with media id, mime type and
  caption, location, contacts, button and interactive replies, reactions) is one ``message``,
  direction ``in``, keyed ``whatsapp:<wamid>``, from ``+<wa_id>`` (name from ``profile.name``),
  handle ``whatsapp:<wa_id>``, thread ``wa:<wa_id>`` answered ``{"to": wa_id}``. A user who
  adopted a WhatsApp username may come without a phone, only with a business-scoped user id
  (BSUID, ``contacts[].user_id`` / ``messages[].from_user_id``, ``US.1349...``): then the handle is
  ``whatsapp:<BSUID>``, the thread ``wa:<BSUID>`` answered ``{"recipient": BSUID, "handles"}``; when both
  come, both handles are kept, so the card is found either way later.
- Each of ``statuses`` (``sent``, ``delivered``, ``read``, ``failed`` with ``errors[]``) is a
  :class:`MessageStatus` keyed ``whatsapp:status:<wamid>:<status>``.
- A change for another phone number of the account (``metadata.phone_number_id`` is not
  ``config.phone_number_id``) belongs to another channel and is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import _form_util as fu
from . import _meta as meta
from ._wa_content import content_of
from .base import (
    Captured,
    ChannelView,
    HookOutcome,
    MessageState,
    MessageStatus,
    RawRequest,
    Sender,
    Thread,
)

DEFAULT_API_BASE_URL = "https://graph.facebook.com/v26.0"
MAX_ITEMS = 200
STATES: tuple[MessageState, ...] = ("sent", "delivered", "read", "failed")
IGNORED_TYPES = frozenset({"system", "request_welcome", "ephemeral"})


BSUID = re.compile(r"^[A-Z]{2}(\.ENT)?\.[A-Za-z0-9]{1,128}$")


@dataclass(frozen=True)
class _Person:
    wa_id: str | None
    user_id: str | None
    name: str | None
    username: str | None


def bsuid_of(value: Any) -> str | None:
    """A business-scoped user id (``US.13491208655302741918``)."""
    text = fu.scalar_text(value)
    return text if BSUID.match(text) else None


def wa_id_of(value: Any) -> str | None:
    """A WhatsApp user id: the phone number in international form, digits only."""
    text = fu.scalar_text(value).lstrip("+")
    return text if text.isdigit() and 5 <= len(text) <= 20 else None


class WhatsAppAdapter:
    """Adapter for ``kind = "whatsapp"``."""

    kind = "whatsapp"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        if request.method.upper() == "GET":
            return meta.verify_subscription(channel, request)
        entries = meta.signed_entries(channel, request, "whatsapp_business_account")
        if entries is None:
            return HookOutcome(response=fu.json_response(), discarded="ignored")
        own_number = fu.scalar_text(channel.config.get("phone_number_id"))
        items: dict[str, Captured] = {}
        statuses: dict[str, MessageStatus] = {}
        for entry in entries:
            for change in fu.lst(fu.obj(entry).get("changes")):
                change = fu.obj(change)
                if change.get("field") != "messages":
                    continue
                value = change.get("value")
                if not isinstance(value, Mapping):
                    raise fu.invalid({"entry.changes.value": "value must be an object."})
                number = fu.scalar_text(fu.obj(value.get("metadata")).get("phone_number_id"))
                if own_number and number and number != own_number:
                    continue
                messages, reports = fu.lst(value.get("messages")), fu.lst(value.get("statuses"))
                if len(items) + len(statuses) + len(messages) + len(reports) > MAX_ITEMS:
                    raise fu.invalid({"entry": f"At most {MAX_ITEMS} messages and statuses per delivery."})
                people = self._names(value.get("contacts"))
                for message in messages:
                    item = self._message(fu.obj(message), people, now)
                    if item is not None:
                        items.setdefault(item.idempotency_key, item)
                for report in reports:
                    st = self._status(fu.obj(report), now)
                    if st is not None:
                        statuses.setdefault(st.idempotency_key, st)
        if not items and not statuses:
            return HookOutcome(response=fu.json_response(), discarded="ignored")
        return HookOutcome(
            response=fu.json_response(), items=tuple(items.values()), statuses=tuple(statuses.values())
        )

    @staticmethod
    def _names(contacts: Any) -> list[_Person]:
        people: list[_Person] = []
        for contact in fu.lst(contacts)[:MAX_ITEMS]:
            contact = fu.obj(contact)
            profile = fu.obj(contact.get("profile"))
            person = _Person(
                wa_id=wa_id_of(contact.get("wa_id")),
                user_id=bsuid_of(contact.get("user_id")),
                name=fu.clean_text(fu.scalar_text(profile.get("name")), 200) or None,
                username=fu.clean_text(fu.scalar_text(profile.get("username")), 100) or None,
            )
            if person.wa_id or person.user_id:
                people.append(person)
        return people

    @staticmethod
    def _who(msg: Mapping[str, Any], people: list[_Person]) -> _Person:
        """The writer: ``from`` (phone) and ``from_user_id`` (BSUID), completed from ``contacts``."""
        wa_id = wa_id_of(msg.get("from"))
        user_id = bsuid_of(msg.get("from_user_id"))
        match = next(
            (p for p in people if (wa_id and p.wa_id == wa_id) or (user_id and p.user_id == user_id)),
            # no sender on the message itself (a username user): the delivery's one contact
            people[0] if len(people) == 1 and not (msg.get("from") or msg.get("from_user_id")) else None,
        )
        if match is None:
            return _Person(wa_id, user_id, None, None)
        return _Person(wa_id or match.wa_id, user_id or match.user_id, match.name, match.username)

    def _message(self, msg: Mapping[str, Any], people: list[_Person], now: datetime) -> Captured | None:
        kind = fu.scalar_text(msg.get("type")) or "unknown"
        if kind in IGNORED_TYPES:
            return None
        wamid = fu.scalar_text(msg.get("id"))
        who = self._who(msg, people)
        errors = {}
        if not wamid:
            errors["messages.id"] = "id (wamid) is required."
        if who.wa_id is None and who.user_id is None:
            errors["messages.from"] = (
                "from (the WhatsApp id, digits) or a business-scoped user id is required."
            )
        if errors:
            raise fu.invalid(errors)
        wa_id, user_id = who.wa_id, who.user_id
        peer = wa_id or user_id
        assert peer is not None
        wamid = fu.safe_id(wamid, 200)
        text, summary, details = content_of(kind, msg)
        data: dict[str, Any] = {
            "text": text,
            "type": kind,
            "wa_id": wa_id,
            "user_id": user_id,
            "username": who.username,
            "message_id": wamid,
            "attachments": details.pop("attachments", []),
            **details,
        }
        context = fu.obj(msg.get("context"))
        if context.get("id"):
            data["reply_to"] = fu.safe_id(context["id"], 200)
        utm: dict[str, str] = {}
        referral = fu.obj(msg.get("referral"))
        if referral:  # a click-to-WhatsApp ad
            data["referral"] = {
                k: fu.clean_text(fu.scalar_text(referral.get(k)), 500)
                for k in ("source_url", "source_id", "source_type", "headline", "ctwa_clid")
                if referral.get(k) is not None
            }
            utm = {"utm_source": "facebook", "utm_medium": "paid_social"}
            if referral.get("source_id"):
                utm["utm_content"] = fu.clean_text(fu.scalar_text(referral["source_id"]), 200)
        return Captured(
            idempotency_key=f"whatsapp:{wamid}",
            kind="message",
            direction="in",
            occurred_at=fu.parse_time(msg.get("timestamp"), now),
            sender=Sender(
                name=who.name,
                phones=(f"+{wa_id}",) if wa_id else (),
                handles=tuple(f"whatsapp:{x}" for x in (wa_id, user_id) if x),
            ),
            summary=f"WhatsApp: {summary}",
            data=data,
            utm=utm,
            thread=Thread(
                key=f"wa:{peer}",
                address={"to": wa_id}
                if wa_id
                else {"recipient": user_id, "handles": [f"whatsapp:{user_id}"]},
            ),
            provider_message_id=wamid,
        )

    @staticmethod
    def _status(status: Mapping[str, Any], now: datetime) -> MessageStatus | None:
        state = fu.scalar_text(status.get("status"))
        wamid = fu.scalar_text(status.get("id"))
        if not wamid:
            raise fu.invalid({"statuses.id": "id (wamid) is required."})
        if state not in STATES:
            return None  # "deleted", "warning", "played": nothing the conversation shows
        error = None
        if state == "failed":
            parts = []
            for err in fu.lst(status.get("errors"))[:3]:
                err = fu.obj(err)
                title = fu.scalar_text(err.get("title"))
                message = fu.scalar_text(err.get("message"))
                details = fu.scalar_text(fu.obj(err.get("error_data")).get("details"))
                text = ": ".join(dict.fromkeys(p for p in (title, message or details) if p))
                code = fu.scalar_text(err.get("code"))
                parts.append(f"{text} ({code})" if code else text)
            error = fu.clean_text("; ".join(p for p in parts if p), 500) or "failed"
        wamid = fu.safe_id(wamid, 200)
        return MessageStatus(
            idempotency_key=f"whatsapp:status:{wamid}:{state}",
            provider_message_id=wamid,
            status=state,
            occurred_at=fu.parse_time(status.get("timestamp"), now),
            error=error,
        )

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return outcome.items


ADAPTER = WhatsAppAdapter()
