"""The connectors service's typed contract (the part other packages use): the channel kinds and
the conversations' requests and answers."""

from __future__ import annotations

from typing import Literal, get_args

from services.connectors.conversations.api import (
    ConversationOut,
    ConversationPage,
    MessageOut,
    MessagePage,
    SendIn,
    StartIn,
)

HookKind = Literal[
    "form",
    "tilda",
    "typeform",
    "webflow",
    "yandex_forms",
    "twilio",
    "zadarma",
    "mango",
    "asterisk",
    "meta_leads",
    "google_ads",
    "vk",
    "telegram",
    "whatsapp",
    "avito",
]
"""Kinds whose provider calls ``POST /hooks/<channel id>``: each has an adapter module."""
ChannelKind = Literal[HookKind, "imap"]
"""Every kind of channel: the hook kinds and IMAP mailboxes (polled)."""
HOOK_KINDS: tuple[str, ...] = get_args(HookKind)
CHANNEL_KINDS: tuple[str, ...] = (*HOOK_KINDS, "imap")

__all__ = [
    "CHANNEL_KINDS",
    "HOOK_KINDS",
    "ChannelKind",
    "ConversationOut",
    "ConversationPage",
    "HookKind",
    "MessageOut",
    "MessagePage",
    "SendIn",
    "StartIn",
]
