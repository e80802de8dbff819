"""The connectors service's typed contract (the part the gateway imports): conversations."""

from __future__ import annotations

from services.connectors.conversations.api import (
    ConversationOut,
    ConversationPage,
    MessageOut,
    MessagePage,
    SendIn,
    StartIn,
)

__all__ = ["ConversationOut", "ConversationPage", "MessageOut", "MessagePage", "SendIn", "StartIn"]
