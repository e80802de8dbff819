"""The connectors service's typed contract (the part other packages use): the channel kinds."""

from __future__ import annotations

from typing import Literal, get_args

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
]
"""Kinds whose provider calls ``POST /hooks/<channel id>``: each has an adapter module."""
ChannelKind = Literal[HookKind, "imap"]
"""Every kind of channel: the hook kinds and IMAP mailboxes (polled)."""
HOOK_KINDS: tuple[str, ...] = get_args(HookKind)
CHANNEL_KINDS: tuple[str, ...] = (*HOOK_KINDS, "imap")
