"""Outbound senders: one module per channel kind that can answer a customer; each exposes ``SENDER``.

The contract lives in :mod:`services.connectors.senders.base`. A kind's module is found by its
name (``services.connectors.senders.<kind>``), as :func:`~services.connectors.adapters.get_adapter`
finds adapters: a new sender plugs in by existing. The email sender serves ``imap`` channels.
"""

from __future__ import annotations

import importlib
from functools import cache

from services.connectors.senders.base import Sender

MODULES = {"imap": "smtp"}
"""Kinds whose sender module is not named after the kind."""


@cache
def get_sender(kind: str) -> Sender | None:
    """The sender for channels of ``kind``; ``None`` when the kind cannot send (forms, calls)."""
    name = MODULES.get(kind, kind)
    if not name.isidentifier() or name in ("base",):
        return None
    try:
        module = importlib.import_module(f"services.connectors.senders.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"services.connectors.senders.{name}":
            raise  # the module exists but one of its imports does not: a bug, not "no sender"
        return None
    sender = getattr(module, "SENDER", None)
    return sender if sender is not None else None


def resend_safe(sender: Sender) -> bool:
    """Whether an attempt cut off by a crash may be repeated: the provider deduplicates by the
    send's key (VK ``random_id``; SMTP, whose fixed Message-ID makes a repeat the same message).
    A sender says so with ``resend_safe = True``; otherwise an interrupted attempt is not repeated
    and the message fails saying it may have been delivered."""
    return bool(getattr(sender, "resend_safe", False))
