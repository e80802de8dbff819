"""The thread of a message reaches ``interaction.captured`` only from the adapter's ``Thread``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.connectors.adapters.base import Captured, Sender, Thread
from services.connectors.normalise import normalise

pytestmark = pytest.mark.unit
CHANNEL = {"_id": "ch1", "kind": "telegram", "intake": "auto"}
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def item(**kw: object) -> Captured:
    return Captured(
        idempotency_key="telegram:1",
        kind="message",
        direction="in",
        occurred_at=NOW,
        sender=Sender(handles=("telegram:5",)),
        summary="hi",
        **kw,  # type: ignore[arg-type]
    )


def test_thread_and_provider_message_id_are_carried_in_data() -> None:
    ic = normalise(
        item(thread=Thread("chat:5", {"chat_id": 5}), provider_message_id="17", data={"text": "hi"}),
        CHANNEL,
        "RU",
    )
    assert ic.data["thread"] == {"key": "chat:5", "address": {"chat_id": 5}}
    assert ic.data["provider_message_id"] == "17" and ic.data["text"] == "hi"


def test_a_thread_smuggled_into_data_is_dropped() -> None:
    smuggled = {"thread": {"key": "x", "address": {"to": ["victim@example.com"]}}, "text": "hi"}
    ic = normalise(item(data=smuggled), CHANNEL, "RU")
    assert "thread" not in ic.data and ic.data["text"] == "hi"
