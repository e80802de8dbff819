"""The pure rules of conversations: counters, status transitions, new threads, subjects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.connectors.conversations.domain.conversation import (
    Counters,
    next_status,
    on_answer_sent,
    on_inbound,
    on_read,
)
from services.connectors.conversations.domain.messages import (
    event_payload,
    identity_of,
    inbound_text,
    reply_subject,
)
from services.connectors.conversations.domain.threads import NoAddress, message_id_for, new_thread

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_inbound_messages_count_unread_and_wait_since_the_first_unanswered() -> None:
    c = on_inbound(Counters(), at(0))
    c = on_inbound(c, at(5))
    assert c == Counters(unread=2, last_message_at=at(5), awaiting_reply_since=at(0))


def test_a_message_that_arrives_late_but_was_written_earlier_moves_the_wait_back() -> None:
    c = on_inbound(on_inbound(Counters(), at(5)), at(1))
    assert c.awaiting_reply_since == at(1) and c.last_message_at == at(5)


def test_an_answer_ends_the_wait_and_says_how_long_it_was() -> None:
    c, waited = on_answer_sent(on_inbound(Counters(), at(0)), at(12))
    assert waited == at(0)
    assert c == Counters(unread=0, last_message_at=at(12), awaiting_reply_since=None)


def test_a_follow_up_nobody_waited_for_has_no_wait() -> None:
    _, waited = on_answer_sent(Counters(last_message_at=at(0)), at(3))
    assert waited is None


def test_customer_writing_after_the_answer_went_out_still_waits() -> None:
    c, waited = on_answer_sent(on_inbound(Counters(), at(10)), at(9))
    assert waited is None and c.awaiting_reply_since == at(10) and c.unread == 0


def test_reading_clears_unread_only() -> None:
    c = on_read(on_inbound(Counters(), at(0)))
    assert c.unread == 0 and c.awaiting_reply_since == at(0)


@pytest.mark.parametrize(
    ("current", "reported", "expected"),
    [
        ("queued", "sent", "sent"),
        ("sent", "delivered", "delivered"),
        ("sent", "read", "read"),
        ("read", "delivered", None),  # late report
        ("delivered", "delivered", None),
        ("sent", "failed", "failed"),
        ("delivered", "failed", None),  # delivered is delivered
        ("failed", "read", None),
        ("received", "read", None),  # inbound messages have no delivery status
        ("sent", "deleted", None),
    ],
)
def test_status_only_moves_forward(current: str, reported: str, expected: str | None) -> None:
    assert next_status(current, reported) == expected


def test_telegram_thread_from_the_contacts_handle() -> None:
    t = new_thread("telegram", {"handles": ["vk:1", "telegram:123456"]}, subject=None)
    assert (t.key, t.address, t.identity) == (
        "chat:123456",
        {"chat_id": 123456},
        {"handles": ["telegram:123456"]},
    )


def test_email_thread_is_keyed_by_its_first_message_id() -> None:
    mid = message_id_for("01ABC", "sales@corp.example")
    t = new_thread("imap", {"emails": ["anna@client.example"]}, subject="Счёт", first_message_id=mid)
    assert t.key == f"mail:{mid}" and t.address == {
        "to": ["anna@client.example"],
        "subject": "Счёт",
        "references": [],
    }


def test_whatsapp_and_vk_threads_match_their_adapters() -> None:
    assert new_thread("whatsapp", {"phones": ["+79161234567"]}, subject=None).key == "wa:79161234567"
    assert new_thread("vk", {"handles": ["vk:55"]}, subject=None).address == {"peer_id": 55}


@pytest.mark.parametrize(
    ("kind", "contact"),
    [
        ("telegram", {"phones": ["+7916"]}),
        ("imap", {"phones": ["+7916"]}),
        ("avito", {"handles": ["avito:1"]}),
    ],
)
def test_no_identity_on_the_network_is_no_address(kind: str, contact: dict[str, list[str]]) -> None:
    with pytest.raises(NoAddress):
        new_thread(kind, contact, subject=None, first_message_id="<x@y>")


def test_message_id_is_fixed_by_the_key_and_the_mailbox_domain() -> None:
    a = message_id_for("k1", "sales@corp.example")
    assert a == message_id_for("k1", "sales@corp.example") != message_id_for("k2", "sales@corp.example")
    assert a.startswith("<crm.") and a.endswith("@corp.example>")


def test_identity_of_threads_files_our_answer_on_the_customer() -> None:
    assert identity_of("telegram", {"chat_id": 5}) == {"handles": ["telegram:5"]}
    assert identity_of("imap", {"to": ["a@b.c"]}) == {"emails": ["a@b.c"]}
    assert identity_of("whatsapp", {"to": "7916"}) == {"phones": ["+7916"]}
    assert identity_of("avito", {"chat_id": "x"}) == {}


def test_reply_subject() -> None:
    assert reply_subject("Вопрос", None) == "Re: Вопрос"
    assert reply_subject("RE: Вопрос", None) == "RE: Вопрос"
    assert reply_subject("Вопрос", "Другая тема") == "Другая тема"
    assert reply_subject(None, None) == ""


def test_inbound_text_and_public_payload_without_text() -> None:
    assert inbound_text({"text": None, "body_text": "тело"}) == "тело"
    message = {
        "_id": "m1",
        "direction": "in",
        "status": "received",
        "text": "секрет",
        "provider_message_id": "17",
    }
    conv = {"_id": "c1", "channel_id": "ch", "kind": "telegram", "contact_id": "k", "assignee_id": "u"}
    payload = event_payload(message, conv, at(0))
    assert "секрет" not in str(payload) and payload["occurred_at"] == at(0).isoformat()
