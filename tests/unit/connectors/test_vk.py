"""VK Callback API: confirmation handshake, secret, lead_forms_new, message_new, unknown events."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.adapters.vk import ADAPTER, VkAdapter
from tests.support.fuzz import mutations

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "forms"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def channel(secrets: dict | None = None, config: dict | None = None) -> ChannelView:
    return ChannelView(
        id="vk1",
        tenant_id="t1",
        kind="vk",
        config=config or {},
        secrets=secrets if secrets is not None else {"secret": "vk-s3cret", "confirmation": "a1b2c3d4"},
    )


def request(body: bytes, ctype: str = "application/json") -> RawRequest:
    return RawRequest("POST", "https://crm.example.com/hooks/vk1", "", "", {"content-type": ctype}, body)


def fixture(name: str, **changes) -> bytes:
    doc = json.loads((FIXTURES / name).read_text())
    doc.update(changes)
    return json.dumps(doc, ensure_ascii=False).encode()


def error(body: bytes, ch: ChannelView | None = None, ctype="application/json") -> HookError:
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch or channel(), request(body, ctype), NOW)
    return info.value


def test_adapter_kind():
    assert isinstance(ADAPTER, VkAdapter) and ADAPTER.kind == "vk"


def test_confirmation_answers_the_string_exactly_without_secret():
    out = ADAPTER.handle(channel(), request(fixture("vk_confirmation.json")), NOW)
    assert out.response.status == 200
    assert out.response.body == b"a1b2c3d4"
    assert out.durable is False and out.items == ()


def test_confirmation_for_another_community_is_refused():
    ch = channel(config={"group_id": 1})
    assert error(fixture("vk_confirmation.json"), ch).status == 401


def test_confirmation_not_configured_is_422():
    assert error(fixture("vk_confirmation.json"), channel(secrets={})).status == 422


def test_lead_forms_new_is_an_ad_lead():
    out = ADAPTER.handle(channel(), request(fixture("vk_lead_forms_new.json")), NOW)
    assert out.response.body == b"ok"
    (item,) = out.items
    assert item.kind == "ad_lead" and item.direction == "in"
    assert item.idempotency_key == "vk:5b8ac4a0c1f0b6d1e2f3a4b5c6d7e8f9a0b1c2d3"
    assert item.sender.name == "Ольга Смирнова"
    assert item.sender.phones == ("+7 926 111-22-33",)
    assert item.sender.emails == ("olga@example.ru",)
    assert item.data["fields"]["Удобное время"] == "После 18:00"
    assert item.data["vk_user_id"] == "1234567"
    assert item.data["form_name"] == "Запись на тест-драйв"
    assert item.utm == {"utm_source": "vk", "utm_medium": "cpc", "utm_content": "99887766"}
    assert item.summary == "Lead form (VK): Запись на тест-драйв"


def test_lead_without_event_id_uses_group_and_lead_id():
    doc = json.loads(fixture("vk_lead_forms_new.json"))
    del doc["event_id"]
    (item,) = ADAPTER.handle(channel(), request(json.dumps(doc).encode()), NOW).items
    assert item.idempotency_key == "vk:lead_forms_new:211234567:42"


def test_message_new_is_a_message():
    out = ADAPTER.handle(channel(), request(fixture("vk_message_new.json")), NOW)
    assert out.response.body == b"ok"
    (item,) = out.items
    assert item.kind == "message" and item.direction == "in"
    assert item.data["text"] == "Здравствуйте! Сколько стоит доставка?"
    assert item.data["vk_user_id"] == "1234567"
    assert item.summary.startswith("Здравствуйте!")
    assert item.occurred_at == datetime.fromtimestamp(1764200000, tz=UTC)
    assert item.idempotency_key == "vk:a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


def test_message_without_event_id_uses_conversation_message_id():
    doc = json.loads(fixture("vk_message_new.json"))
    del doc["event_id"]
    (item,) = ADAPTER.handle(channel(), request(json.dumps(doc).encode()), NOW).items
    assert item.idempotency_key == "vk:message_new:211234567:1234567:321"


def test_wrong_or_missing_secret_is_401():
    assert error(fixture("vk_lead_forms_new.json", secret="nope")).status == 401
    doc = json.loads(fixture("vk_message_new.json"))
    del doc["secret"]
    assert error(json.dumps(doc).encode()).status == 401


def test_unknown_types_answer_ok_and_are_ignored():
    body = json.dumps({"type": "wall_post_new", "object": {}, "group_id": 1, "secret": "vk-s3cret"})
    out = ADAPTER.handle(channel(), request(body.encode()), NOW)
    assert out.response.body == b"ok" and out.discarded == "ignored" and out.items == ()


def test_duplicate_same_key():
    a = ADAPTER.handle(channel(), request(fixture("vk_lead_forms_new.json")), NOW).items[0]
    b = ADAPTER.handle(channel(), request(fixture("vk_lead_forms_new.json")), NOW).items[0]
    assert a.idempotency_key == b.idempotency_key


def test_malformed():
    assert error(b'{"type": "lead_forms_new", "obj').status == 400
    assert error(b"type=confirmation", ctype="application/x-www-form-urlencoded").status == 415
    assert error(b'{"object": {}, "secret": "vk-s3cret"}').status == 422
    assert error(b'{"object": {}}').status == 401
    err = error(fixture("vk_lead_forms_new.json", object={"answers": []}))
    assert err.status == 422 and "object.lead_id" in err.errors
    err = error(fixture("vk_message_new.json", object={"message": {"text": "hi"}}))
    assert err.status == 422


def test_hostile_answers_give_clean_record():
    obj = {
        "lead_id": 1,
        "user_id": 5,
        "answers": [
            "junk",
            {"key": "first_name", "question": "Имя", "answer": "<script>x</script>\u0007"},
            {"key": "custom_1", "question": "Выбор", "answer": [{"key": "a", "value": "A"}]},
            {"key": "phone_number", "answer": "не скажу"},
        ],
    }
    (item,) = ADAPTER.handle(channel(), request(fixture("vk_lead_forms_new.json", object=obj)), NOW).items
    assert item.sender.name == "<script>x</script>"
    assert item.sender.phones == ()
    assert item.data["fields"]["Выбор"] == "A"


def test_mutated_payloads_give_a_hook_error_or_a_clean_record():
    def run(body):
        return ADAPTER.handle(channel(), request(body), NOW)

    for doc in mutations(json.loads(fixture("vk_lead_forms_new.json")), random.Random(42), 300):
        try:
            out = run(json.dumps(doc).encode())
        except HookError as exc:
            assert exc.status in (400, 401, 415, 422)
            continue
        for item in out.items:
            assert item.occurred_at.tzinfo is not None
            json.dumps(item.data)
            assert all(isinstance(v, str) for v in item.utm.values())


def test_a_channel_without_a_secret_refuses_leads_it_cannot_verify():
    """VK signs every call with the Callback API secret: without one, a forged lead is refused."""
    forged = fixture("vk_lead_forms_new.json", secret="anything")
    assert error(forged, channel(secrets={"confirmation": "a1b2c3d4"})).status == 401
    doc = json.loads(forged)
    del doc["secret"]
    assert error(json.dumps(doc).encode(), channel(secrets={"confirmation": "a1b2c3d4"})).status == 401
