"""The table of conversations: indexes, the events it handles, its RPC methods. No logic.

:func:`install` registers them on the service that hosts conversations (connectors).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from services.connectors.conversations import store
from services.connectors.conversations.handlers import contacts, delivery, inbound, queries, send

INDEXES = store.INDEXES
EVENTS: dict[str, Callable[..., Awaitable[None]]] = {
    "interaction.recorded": inbound.on_recorded,
    "delivery.status_reported": delivery.on_status_reported,
    "contact.merged": contacts.on_merged,
}
ON_ERASED = contacts.forget
"""``contact.erased`` is handled by the host (connectors forgets its call records too) and
passed on here."""
RPC: dict[str, Callable[..., Awaitable[Any]]] = {
    "list_conversations": queries.list_conversations,
    "get_conversation": queries.get_conversation,
    "list_messages": queries.list_messages,
    "read_conversation": queries.mark_read,
    "send_message": send.send_message,
    "start_conversation": send.start_conversation,
}


def install(host: Any) -> None:
    for event_type, handler in EVENTS.items():
        host.on(event_type, partial(handler, host))
    for name, method in RPC.items():
        host.rpc.method(name)(partial(method, host))
