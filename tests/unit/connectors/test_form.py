"""The generic ``form`` adapter: parsing, contact extraction, UTM, security, idempotency, errors."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest

from services.connectors.adapters.base import ChannelView, HookError, RawRequest
from services.connectors.adapters.form import ADAPTER, FormAdapter

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "forms"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
URLENC = "application/x-www-form-urlencoded"


def channel(config: dict | None = None, secrets: dict | None = None) -> ChannelView:
    return ChannelView(id="ch1", tenant_id="t1", kind="form", config=config or {}, secrets=secrets or {})


def request(
    body: bytes,
    content_type: str = URLENC,
    headers: dict[str, str] | None = None,
    query: str = "",
    method: str = "POST",
) -> RawRequest:
    h = {"content-type": content_type} if content_type else {}
    h.update({k.lower(): v for k, v in (headers or {}).items()})
    return RawRequest(
        method=method,
        url="https://crm.example.com/hooks/ch1" + (f"?{query}" if query else ""),
        subpath="",
        query=query,
        headers=h,
        body=body,
    )


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().strip()


def error_of(ch: ChannelView, req: RawRequest) -> HookError:
    with pytest.raises(HookError) as info:
        ADAPTER.handle(ch, req, NOW)
    return info.value


def test_module_exposes_adapter_instance():
    assert isinstance(ADAPTER, FormAdapter)
    assert ADAPTER.kind == "form"


def test_urlencoded_contact_form_7_submission_is_captured():
    out = ADAPTER.handle(channel(), request(fixture("form_cf7.txt")), NOW)
    assert out.response.status == 200
    assert json.loads(out.response.body) == {"status": "accepted"}
    assert out.response.content_type == "application/json"
    assert out.durable and not out.needs_enrichment and out.discarded is None
    (item,) = out.items
    assert item.kind == "form" and item.direction == "in"
    assert item.sender.name == "Иван Петров"
    assert item.sender.phones == ("8 (916) 123-45-67",)
    assert item.sender.emails == ("ivan@example.ru",)
    assert item.utm == {"utm_source": "yandex", "utm_medium": "cpc", "utm_campaign": "spring"}
    assert item.data["utm"] == item.utm
    assert item.data["page_url"].startswith("https://shop.example.ru/landing?")
    assert item.data["fields"]["your-message"] == "Перезвоните"
    assert item.summary == "Form submission: Callback"
    assert item.occurred_at == NOW


def test_nested_json_is_flattened_and_contact_found_in_nested_object():
    out = ADAPTER.handle(channel(), request(fixture("form_nested.json"), "application/json"), NOW)
    (item,) = out.items
    assert item.sender.name == "Jane Doe"
    assert item.sender.phones == ("+1 415 555 0142",)
    assert item.sender.emails == ("Jane.Doe@Example.com",)
    fields = item.data["fields"]
    assert fields["contact.phone"] == "+1 415 555 0142"
    assert fields["interests"] == "crm, telephony"
    assert fields["consent"] == "true"
    assert fields["form.name"] == "Request a demo"
    assert item.summary == "Form submission: Request a demo"
    assert item.idempotency_key == "form:ch1:sub-42"
    assert item.utm == {
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "brand",
        "utm_term": "crm",
    }


def test_field_names_are_case_insensitive_and_fio_is_a_name():
    body = urlencode({"FIO": "Анна", "Tel": "+7 916 000-00-00", "EMAIL": "a@b.ru"}).encode()
    (item,) = ADAPTER.handle(channel(), request(body), NOW).items
    assert item.sender.name == "Анна"
    assert item.sender.phones == ("+7 916 000-00-00",)
    assert item.sender.emails == ("a@b.ru",)
    assert item.summary == "Form submission: website form"


def test_field_map_maps_custom_names():
    body = urlencode({"Телефон": "89161234567", "Имя": "Олег"}).encode()
    ch = channel(config={"field_map": {"Телефон": "phone", "Имя": "name"}})
    (item,) = ADAPTER.handle(ch, request(body), NOW).items
    assert item.sender.phones == ("89161234567",)
    assert item.sender.name == "Олег"
    assert item.data["fields"] == {"Телефон": "89161234567", "Имя": "Олег"}


def test_multipart_fields_are_read():
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    parts = [
        ("name", "Пётр"),
        ("phone", "+7 (999) 111-22-33"),
        ("utm_source", "vk"),
    ]
    body = b""
    for k, v in parts:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n').encode()
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="cv"; filename="cv.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n%PDF-1.4 binary\r\n"
    ).encode()
    body += f"--{boundary}--\r\n".encode()
    ct = f"multipart/form-data; boundary={boundary}"
    (item,) = ADAPTER.handle(channel(), request(body, ct), NOW).items
    assert item.sender.name == "Пётр"
    assert item.sender.phones == ("+7 (999) 111-22-33",)
    assert item.utm == {"utm_source": "vk"}
    assert item.data["fields"]["cv"] == "cv.pdf"


def test_windows_1251_urlencoded_body_is_decoded():
    body = "name=%" + "%".join(f"{b:02X}" for b in "Сергей".encode("cp1251"))
    (item,) = ADAPTER.handle(channel(), request(body.encode()), NOW).items
    assert item.sender.name == "Сергей"


def test_repeated_keys_are_joined():
    body = b"name=A&interest%5B%5D=crm&interest%5B%5D=voip"
    (item,) = ADAPTER.handle(channel(), request(body), NOW).items
    assert item.data["fields"]["interest"] == "crm, voip"


def test_utm_fields_take_precedence_over_page_url():
    body = urlencode(
        {"name": "A", "utm_source": "mail", "page_url": "https://x.ru/?utm_source=other"}
    ).encode()
    (item,) = ADAPTER.handle(channel(), request(body), NOW).items
    assert item.utm == {"utm_source": "mail"}


def test_explicit_utm_object_merges_with_page_url_tags_and_wins():
    """A page URL with some tags plus an explicit ``utm`` object: both sets, the object winning."""
    body = {
        "name": "A",
        "phone": "+79161234567",
        "page_url": "https://x.ru/p?utm_content=ad1&utm_source=from-url",
        "utm": {"utm_source": "google", "utm_campaign": "spring"},
    }
    (item,) = ADAPTER.handle(channel(), request(json.dumps(body).encode(), "application/json"), NOW).items
    want = {"utm_source": "google", "utm_campaign": "spring", "utm_content": "ad1"}
    assert item.utm == want
    assert item.data["utm"] == want


def test_utm_object_with_short_names_is_read():
    body = {
        "name": "A",
        "page": {"url": "https://x.ru/?utm_term=crm"},
        "utm": {"source": "vk", "medium": "cpc"},
    }
    (item,) = ADAPTER.handle(channel(), request(json.dumps(body).encode(), "application/json"), NOW).items
    assert item.utm == {"utm_source": "vk", "utm_medium": "cpc", "utm_term": "crm"}


def test_utm_from_referer_when_no_fields_or_page_url():
    body = urlencode({"name": "A"}).encode()
    req = request(body, headers={"Referer": "https://x.ru/p?utm_source=yandex&utm_content=ad1"})
    (item,) = ADAPTER.handle(channel(), req, NOW).items
    assert item.utm == {"utm_source": "yandex", "utm_content": "ad1"}
    assert item.data["page_url"] is None


def test_token_in_header_or_query_is_accepted_and_wrong_token_is_401():
    ch = channel(secrets={"token": "s3cret"})
    body = b"name=A"
    assert ADAPTER.handle(ch, request(body, headers={"X-CRM-Token": "s3cret"}), NOW).items
    assert ADAPTER.handle(ch, request(body, query="token=s3cret"), NOW).items
    assert error_of(ch, request(body, query="token=nope")).status == 401
    assert error_of(ch, request(body)).status == 401


def test_hmac_signature_required_when_configured():
    ch = channel(secrets={"hmac_secret": "k"})
    body = json.dumps({"name": "A", "phone": "123456"}).encode()
    sig = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    ok = request(body, "application/json", {"X-Signature": f"sha256={sig}"})
    assert ADAPTER.handle(ch, ok, NOW).items
    bad = request(body + b" ", "application/json", {"X-Signature": f"sha256={sig}"})
    assert error_of(ch, bad).status == 401
    assert error_of(ch, request(body, "application/json")).status == 401


def test_honeypot_filled_is_accepted_as_spam_without_items():
    ch = channel(config={"honeypot_field": "website"})
    out = ADAPTER.handle(ch, request(b"name=Bot&website=http%3A%2F%2Fspam"), NOW)
    assert out.response.status == 200
    assert out.discarded == "spam"
    assert out.items == ()
    clean = ADAPTER.handle(ch, request(b"name=Human&website="), NOW)
    assert clean.discarded is None and len(clean.items) == 1


def test_byte_identical_repost_has_same_idempotency_key_and_different_body_differs():
    body = b"name=A&phone=12345"
    a = ADAPTER.handle(channel(), request(body), NOW).items[0]
    b = ADAPTER.handle(channel(), request(body), NOW).items[0]
    c = ADAPTER.handle(channel(), request(body + b"&x=1"), NOW).items[0]
    assert a.idempotency_key == b.idempotency_key
    assert a.idempotency_key == "form:ch1:sha256:" + hashlib.sha256(body).hexdigest()
    assert c.idempotency_key != a.idempotency_key


def test_submission_id_field_and_idempotency_header_are_used():
    a = ADAPTER.handle(channel(), request(b"name=A&tranid=123:456"), NOW).items[0]
    assert a.idempotency_key == "form:ch1:123:456"
    b = ADAPTER.handle(channel(), request(b"name=A", headers={"Idempotency-Key": "k-1"}), NOW)
    assert b.items[0].idempotency_key == "form:ch1:k-1"


def test_no_contact_is_422_with_contact_error():
    err = error_of(channel(), request(b"message=hello"))
    assert err.status == 422
    assert err.errors == {"contact": "A phone, an email or a name is required."}


def test_wrong_content_type_is_415():
    assert error_of(channel(), request(b"<a/>", "text/xml")).status == 415
    assert error_of(channel(), request(b"name=A", "")).status == 415


@pytest.mark.parametrize("body", [b'{"name": "A"', b"[1, 2]", b'"str"', b"\xff\xfe", b""])
def test_truncated_or_non_object_json_is_400(body: bytes):
    assert error_of(channel(), request(body, "application/json")).status == 400


def test_deeply_nested_json_is_400_or_clean_never_crashes():
    body = b"[" * 100_000 + b"]" * 100_000
    assert error_of(channel(), request(body, "application/json")).status == 400
    nested: dict = {"name": "A"}
    for _ in range(50):
        nested = {"n": nested}
    nested["phone"] = "123456"
    (item,) = ADAPTER.handle(channel(), request(json.dumps(nested).encode(), "application/json"), NOW).items
    assert item.sender.phones == ("123456",)


def test_hostile_values_give_a_clean_record():
    body = json.dumps(
        {
            "name": "<script>alert(1)</script>\x00\x07Ivan\u202e",
            "phone": "1" * 5000,
            "email": "not-an-email<script>",
            "note": "line1\nline2\x1b[31m",
        }
    ).encode()
    (item,) = ADAPTER.handle(channel(), request(body, "application/json"), NOW).items
    assert "\x00" not in item.sender.name and "\x07" not in item.sender.name
    assert item.sender.name.startswith("<script>")  # kept as inert text
    assert item.sender.phones == ()  # absurd phone is not a phone
    assert item.sender.emails == ()
    assert item.data["fields"]["note"] == "line1\nline2[31m"


def test_huge_field_count_is_422():
    body = urlencode({f"f{i}": "x" for i in range(5000)} | {"name": "A"}).encode()
    err = error_of(channel(), request(body))
    assert err.status == 422 and "fields" in err.errors
    big_json = json.dumps({f"f{i}": "x" for i in range(5000)} | {"name": "A"}).encode()
    assert error_of(channel(), request(big_json, "application/json")).status == 422


def test_submitted_at_field_sets_occurred_at():
    body = json.dumps({"name": "A", "submitted_at": "2026-11-20T10:00:00+03:00"}).encode()
    (item,) = ADAPTER.handle(channel(), request(body, "application/json"), NOW).items
    assert item.occurred_at == datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    assert item.occurred_at.tzinfo is not None


async def test_enrich_returns_the_items():
    out = ADAPTER.handle(channel(), request(b"name=A"), NOW)
    assert await ADAPTER.enrich(channel(), out, None, NOW) == out.items


def test_multipart_with_cyrillic_field_names():
    body = (
        '--XX\r\nContent-Disposition: form-data; name="Телефон"\r\n\r\n+7 916 123-45-67\r\n'
        '--XX\r\nContent-Disposition: form-data; name="Имя"\r\n\r\nОля\r\n--XX--\r\n'
    ).encode()
    out = ADAPTER.handle(channel(), request(body, "multipart/form-data; boundary=XX"), NOW)
    (item,) = out.items
    assert item.data["fields"] == {"Телефон": "+7 916 123-45-67", "Имя": "Оля"}
    assert item.sender.name == "Оля" and item.sender.phones == ("+7 916 123-45-67",)


def test_json_suffix_content_type_is_json():
    (item,) = ADAPTER.handle(
        channel(), request(b'{"email": "x@y.io"}', "application/vnd.api+json"), NOW
    ).items
    assert item.sender.emails == ("x@y.io",)


def test_overlong_submission_ids_are_hashed_not_truncated():
    a = ADAPTER.handle(channel(), request(b"name=A&id=" + b"1" * 300), NOW).items[0]
    b = ADAPTER.handle(channel(), request(b"name=A&id=" + b"1" * 299 + b"2"), NOW).items[0]
    assert a.idempotency_key != b.idempotency_key
    assert a.idempotency_key.startswith("form:ch1:sha256:")


def test_random_bytes_never_raise_anything_but_hook_error():
    rnd = random.Random(5)
    base = fixture("form_cf7.txt")
    types = [URLENC, "multipart/form-data; boundary=XX", "application/json", "multipart/form-data"]
    for i in range(600):
        if i % 2:
            body = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 120)))
        else:
            mutated = bytearray(base)
            for _ in range(rnd.randint(1, 6)):
                pos = rnd.randrange(len(mutated))
                mutated[pos : pos + 2] = bytes(rnd.choice(b'%&=+\x00\xff\xd0;"') for _ in range(2))
            body = bytes(mutated)
        try:
            out = ADAPTER.handle(channel(), request(body, rnd.choice(types)), NOW)
        except HookError as exc:
            assert exc.status in (400, 413, 415, 422)
            continue
        for item in out.items:
            for key, value in item.data["fields"].items():
                key.encode("utf-8")
                value.encode("utf-8")


def test_bidi_override_characters_are_removed_from_names():
    body = json.dumps({"name": "Ivan\u202egnp.exe", "phone": "12345"}).encode()
    (item,) = ADAPTER.handle(channel(), request(body, "application/json"), NOW).items
    assert item.sender.name == "Ivangnp.exe"


def test_malformed_field_map_config_is_ignored():
    ch = channel(config={"field_map": ["not", "a", "mapping"], "honeypot_field": 5})
    (item,) = ADAPTER.handle(ch, request(b"name=A"), NOW).items
    assert item.sender.name == "A"


def test_a_signed_body_replayed_under_new_idempotency_keys_is_one_submission():
    """The dedupe key of a signed hook comes from the signed bytes, never an unsigned header."""
    ch = channel(secrets={"hmac_secret": "k"})
    body = json.dumps({"name": "A", "phone": "+79165550001"}).encode()
    sig = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    keys = {
        ADAPTER.handle(
            ch,
            request(body, "application/json", {"X-Signature": f"sha256={sig}", "Idempotency-Key": f"k-{n}"}),
            NOW,
        )
        .items[0]
        .idempotency_key
        for n in range(4)
    }
    assert keys == {"form:ch1:sha256:" + hashlib.sha256(body).hexdigest()}
