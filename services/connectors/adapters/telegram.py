"""Telegram Bot API webhooks (``setWebhook`` with a ``secret_token``).

Telegram POSTs one ``Update`` as JSON and, when the webhook was set with a secret token, sends it
back in ``X-Telegram-Bot-Api-Secret-Token``; with ``secrets.secret_token`` set that header is
required (compared in constant time).

A ``message`` from a person becomes one ``message`` interaction, direction ``in``, keyed
``telegram:<update_id>``, on the thread ``chat:<chat id>`` (answered with ``sendMessage`` to that chat). Everything else (edited messages, channel posts, callback queries, chat
member updates) and messages sent by bots are accepted and create nothing. A shared contact
(``message.contact.phone_number``) gives the sender's phone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._tel_util import (
    int_of,
    invalid,
    json_object,
    phones,
    plain_preview,
    require_json,
    text_of,
    unix_datetime,
    utc,
)
from .base import (
    Captured,
    ChannelView,
    HookOutcome,
    RawRequest,
    Sender,
    Thread,
    bad_signature,
    constant_time_equal,
)

_MEDIA = ("photo", "video", "voice", "audio", "document", "sticker", "video_note", "location")


def _int_id(value: Any) -> int | None:
    """A Telegram id (may be negative for group chats)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


class TelegramAdapter:
    """Inbound hook adapter for Telegram bot updates."""

    kind = "telegram"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        secret = channel.secrets.get("secret_token")
        if secret:
            got = request.header("x-telegram-bot-api-secret-token")
            if got is None:
                raise bad_signature("X-Telegram-Bot-Api-Secret-Token header missing.")
            if not constant_time_equal(got, secret):
                raise bad_signature("X-Telegram-Bot-Api-Secret-Token does not match.")
        require_json(request)
        update = json_object(request.body)
        update_id = int_of(update.get("update_id"))
        if update_id is None:
            raise invalid({"update_id": "required, a non-negative integer"})
        message = update.get("message")
        if message is None:
            return HookOutcome(discarded="ignored")
        if not isinstance(message, dict):
            raise invalid({"message": "must be an object"})
        sender = message.get("from")
        sender = sender if isinstance(sender, dict) else {}
        if sender.get("is_bot") is True:
            return HookOutcome(discarded="ignored")
        return HookOutcome(items=(self._item(update_id, message, sender, now),))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return ()

    @staticmethod
    def _item(
        update_id: int, message: Mapping[str, Any], sender: Mapping[str, Any], now: datetime
    ) -> Captured:
        chat = message.get("chat")
        chat_id = _int_id(chat.get("id")) if isinstance(chat, dict) else None
        message_id = _int_id(message.get("message_id"))
        sent = unix_datetime(message.get("date"))
        errors = {}
        if chat_id is None:
            errors["message.chat.id"] = "required"
        if message_id is None:
            errors["message.message_id"] = "required"
        if sent is None:
            errors["message.date"] = "required, unix time"
        if errors:
            raise invalid(errors)

        first, last = text_of(sender.get("first_name")), text_of(sender.get("last_name"))
        name = " ".join(p for p in (first, last) if p) or None
        username = text_of(sender.get("username"))
        contact = message.get("contact")
        phone = text_of(contact.get("phone_number")) if isinstance(contact, dict) else None
        text = message.get("text") if isinstance(message.get("text"), str) else None
        if text is None and isinstance(message.get("caption"), str):
            text = message["caption"]

        preview = plain_preview(text, 100)
        if preview:
            summary = f"Telegram message: {preview}"
        elif phone:
            summary = "Telegram message: contact shared"
        else:
            media = next((m for m in _MEDIA if m in message), None)
            summary = f"Telegram message ({media.replace('_', ' ')})" if media else "Telegram message"

        data: dict[str, Any] = {
            "text": text,
            "chat_id": chat_id,
            "username": username,
            "message_id": message_id,
        }
        if phone:
            data["contact_phone"] = phone
        return Captured(
            idempotency_key=f"telegram:{update_id}",
            kind="message",
            direction="in",
            occurred_at=sent or utc(now),
            sender=Sender(name=name, phones=phones(phone), handles=handles_of(sender)),
            summary=summary,
            data=data,
            thread=Thread(f"chat:{chat_id}", {"chat_id": chat_id}),
            provider_message_id=str(message_id),
        )


ADAPTER = TelegramAdapter()


def handles_of(sender: Mapping[str, Any]) -> tuple[str, ...]:
    """``telegram:<user id>``: the same person in any chat, whatever name they show."""
    user_id = _int_id(sender.get("id"))
    return (f"telegram:{user_id}",) if user_id is not None else ()
