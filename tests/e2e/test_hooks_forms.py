"""Site-form hooks through the gateway: generic form, Tilda, Typeform, Webflow, Yandex Forms, and
hostile input (sizes, content types, broken JSON, markup and control characters, absurd phones)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hub import Api, eventually, touches

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "forms"
FORM = "application/x-www-form-urlencoded"


def make_channel(
    admin: Api, kind: str, secrets: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"kind": kind, "name": f"{kind} form", "intake": "auto", "secrets": secrets or {}, **extra}
    r = admin.post("/api/v1/channels", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def contacts(admin: Api, **params: str) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/contacts", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def timeline(admin: Api, contact_id: str) -> list[dict[str, Any]]:
    return touches(admin, contact_id)


def health(admin: Api, channel_id: str) -> dict[str, Any]:
    return admin.get(f"/api/v1/channels/{channel_id}").json()["health"]


def one_contact_with_item(admin: Api, **params: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
        found = contacts(admin, **params)
        if len(found) != 1:
            return None
        items = timeline(admin, found[0]["id"])
        return (found[0], items[0]) if len(items) == 1 else None

    return eventually(probe)


def received(admin: Api, channel_id: str, n: int) -> None:
    eventually(lambda: health(admin, channel_id)["received"] == n)


def assert_refused(admin: Api, channel: dict[str, Any], r: httpx.Response, status: int = 401) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    h = health(admin, channel["id"])
    assert h["rejected"] == 1 and h["received"] == 0
    assert h["last_error"].startswith(str(status)) and h["last_error_at"]
    assert contacts(admin) == []


# ---- generic form ---------------------------------------------------------------------------


def test_form_with_token_keeps_fields_and_page_url_utm_as_attribution(admin: Api) -> None:
    channel = make_channel(admin, "form", {"token": "f-token"})
    page = "https://shop.example.ru/landing?utm_source=vk&utm_medium=social&utm_campaign=winter&utm_term=sofa"
    r = httpx.post(
        channel["webhook_url"],
        data={"fio": "Мария Иванова", "tel": "8 916 555 12 34", "page_url": page, "comment": "Нужен диван"},
        headers={"X-CRM-Token": "f-token"},
    )
    assert r.status_code == 200, r.text
    contact, item = one_contact_with_item(admin, phone="+79165551234")
    assert contact["name"] == "Мария Иванова"
    assert contact["phones"] == ["+79165551234"]
    src = contact["source"]
    assert (src["kind"], src["utm_source"], src["utm_medium"], src["utm_campaign"], src["utm_term"]) == (
        "form",
        "vk",
        "social",
        "winter",
        "sofa",
    )
    assert item["kind"] == "form" and item["direction"] == "in"
    assert item["data"]["page_url"] == page
    assert item["data"]["fields"]["comment"] == "Нужен диван"
    assert item["data"]["utm"]["utm_campaign"] == "winter"
    h = health(admin, channel["id"])
    assert h["received"] == 1 and h["rejected"] == 0
    assert h["last_success_at"] is not None
    assert h["last_error"] is None and h["last_error_at"] is None


def test_form_wrong_token_is_401_and_creates_nothing(admin: Api) -> None:
    channel = make_channel(admin, "form", {"token": "f-token"})
    r = httpx.post(
        channel["webhook_url"], data={"name": "X", "phone": "+79165550000"}, params={"token": "nope"}
    )
    assert_refused(admin, channel, r)


def test_form_json_signed_with_hmac_and_bad_hmac(admin: Api) -> None:
    channel = make_channel(admin, "form", {"hmac_secret": "h-secret"})
    body = json.dumps({"name": "Pat Lee", "email": "Pat@Example.COM", "submission_id": "s-1"}).encode()
    bad = httpx.post(
        channel["webhook_url"],
        content=body,
        headers={"Content-Type": "application/json", "X-Signature": "sha256=" + "0" * 64},
    )
    assert_refused(admin, channel, bad)
    sig = hmac.new(b"h-secret", body, hashlib.sha256).hexdigest()
    for _ in range(2):  # the same submission twice → one item
        r = httpx.post(
            channel["webhook_url"],
            content=body,
            headers={"Content-Type": "application/json", "X-Signature": f"sha256={sig}"},
        )
        assert r.status_code == 200, r.text
    contact, item = one_contact_with_item(admin, email="pat@example.com")
    assert item["data"]["submission_id"] == "s-1"
    assert contact["emails"] == ["pat@example.com"] and contact["name"] == "Pat Lee"
    received(admin, channel["id"], 2)
    assert len(timeline(admin, contact["id"])) == 1


def test_form_honeypot_answers_2xx_counts_spam_and_creates_nothing(admin: Api) -> None:
    channel = make_channel(admin, "form", config={"honeypot_field": "website"})
    r = httpx.post(
        channel["webhook_url"], data={"name": "Bot", "phone": "+79990001122", "website": "spam.example"}
    )
    assert r.status_code == 200
    h = health(admin, channel["id"])
    assert h["discarded_spam"] == 1 and h["received"] == 0
    time.sleep(0.5)
    assert contacts(admin) == []


# ---- hostile input --------------------------------------------------------------------------


def test_oversized_body_is_413_problem(admin: Api) -> None:
    channel = make_channel(admin, "form")
    r = httpx.post(
        channel["webhook_url"], content=b"name=" + b"a" * (1024 * 1024 + 10), headers={"Content-Type": FORM}
    )
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    assert contacts(admin) == []


def test_wrong_content_type_is_415_and_truncated_json_is_400(admin: Api) -> None:
    channel = make_channel(admin, "form")
    r = httpx.post(channel["webhook_url"], content=b"<lead/>", headers={"Content-Type": "application/xml"})
    assert r.status_code == 415 and r.headers["content-type"].startswith("application/problem+json")
    r = httpx.post(
        channel["webhook_url"],
        content=b'{"name": "Ann", "phone": "+7916',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    h = health(admin, channel["id"])
    assert h["rejected"] == 2 and h["last_error"].startswith("400")
    assert contacts(admin) == []


def test_markup_and_control_characters_are_stored_as_text_never_echoed(admin: Api) -> None:
    channel = make_channel(admin, "form")
    name = "<script>alert(1)</script>Оле\x00г\x07"
    r = httpx.post(
        channel["webhook_url"],
        content=json.dumps(
            {"name": name, "phone": "+7 903 444 55 66", "note": "<img src=x onerror=alert(2)>"}
        ),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert b"<script" not in r.content and b"onerror" not in r.content
    contact, item = one_contact_with_item(admin, phone="+79034445566")
    assert contact["name"] == "<script>alert(1)</script>Олег"
    assert item["data"]["fields"]["note"] == "<img src=x onerror=alert(2)>"
    assert "\x00" not in json.dumps(item, ensure_ascii=False)


def test_absurd_phone_gives_a_clean_record_with_the_raw_phone_kept(admin: Api) -> None:
    channel = make_channel(admin, "form")
    absurd = "+7 (999) 123-45-67-89-00-11-22 доб. 555555555555"
    r = httpx.post(
        channel["webhook_url"], data={"name": "Ann Absurd", "email": "ann@absurd.example", "phone": absurd}
    )
    assert r.status_code == 200, r.text
    contact, item = one_contact_with_item(admin, email="ann@absurd.example")
    assert contact["phones"] == []
    assert contact["name"] == "Ann Absurd"
    assert item["data"]["fields"]["phone"] == absurd


# ---- Tilda ----------------------------------------------------------------------------------


def test_tilda_probe_then_submission_with_cookie_utm(admin: Api) -> None:
    channel = make_channel(admin, "tilda", {"token": "tl-key"})
    probe = httpx.post(channel["webhook_url"], data={"test": "test"})
    assert probe.status_code == 200 and probe.text == "ok"
    assert health(admin, channel["id"])["discarded_test"] == 1
    body = (FIXTURES / "tilda_submission.txt").read_bytes().strip()
    bad = httpx.post(channel["webhook_url"], content=body, headers={"Content-Type": FORM, "api-key": "wrong"})
    assert bad.status_code == 401
    for _ in range(2):
        r = httpx.post(
            channel["webhook_url"], content=body, headers={"Content-Type": FORM, "api-key": "tl-key"}
        )
        assert r.status_code == 200 and r.text == "ok"
    contact, item = one_contact_with_item(admin, phone="+79165551234")
    assert contact["name"] == "Мария Иванова"
    assert contact["emails"] == ["maria@example.ru"]
    assert contact["source"]["utm_source"] == "yandex"
    assert contact["source"]["utm_campaign"] == "autumn_sale"
    assert item["data"]["utm"]["utm_term"] == "купить"
    assert item["data"]["fields"]["Textarea"] == "Хочу консультацию"
    received(admin, channel["id"], 2)
    assert len(timeline(admin, contact["id"])) == 1
    assert health(admin, channel["id"])["rejected"] == 1


# ---- Typeform -------------------------------------------------------------------------------


def typeform_sig(secret: str, body: bytes) -> str:
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_typeform_signed_response_with_hidden_utm_and_bad_signature(admin: Api) -> None:
    channel = make_channel(admin, "typeform", {"secret": "tf-secret"})
    body = (FIXTURES / "typeform_response.json").read_bytes()
    bad = httpx.post(
        channel["webhook_url"],
        content=body,
        headers={"Content-Type": "application/json", "Typeform-Signature": typeform_sig("other", body)},
    )
    assert_refused(admin, channel, bad)
    for _ in range(2):
        r = httpx.post(
            channel["webhook_url"],
            content=body,
            headers={
                "Content-Type": "application/json",
                "Typeform-Signature": typeform_sig("tf-secret", body),
            },
        )
        assert r.status_code == 200, r.text
    contact, item = one_contact_with_item(admin, email="laura@example.com")
    assert contact["name"] == "Laura"
    assert contact["phones"] == []  # +1 555 555 0142 is a fictional number: kept as raw text only
    assert item["data"]["fields"]["readable_ref_phone"] == "+15555550142"
    assert contact["source"]["utm_source"] == "newsletter" and contact["source"]["utm_campaign"] == "jan"
    assert item["kind"] == "form"
    assert item["data"]["fields"]["readable_ref_short_text"] == "Laura"
    received(admin, channel["id"], 2)
    assert len(timeline(admin, contact["id"])) == 1


# ---- Webflow --------------------------------------------------------------------------------


def post_webflow(channel: dict[str, Any], body: bytes, secret: str, ts_ms: int) -> httpx.Response:
    ts = str(ts_ms)
    sig = hmac.new(secret.encode(), ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return httpx.post(
        channel["webhook_url"],
        content=body,
        headers={"Content-Type": "application/json", "x-webflow-timestamp": ts, "x-webflow-signature": sig},
    )


def test_webflow_signed_submission_replay_window_and_duplicates(admin: Api) -> None:
    channel = make_channel(admin, "webflow", {"secret": "wf-secret"})
    doc = json.loads((FIXTURES / "webflow_submission.json").read_text())
    doc["payload"]["pageUrl"] = "https://example.com/contact?utm_source=google&utm_medium=cpc"
    body = json.dumps(doc).encode()
    now_ms = int(time.time() * 1000)
    replay = post_webflow(channel, body, "wf-secret", now_ms - 3600 * 1000)
    assert_refused(admin, channel, replay)
    forged = post_webflow(channel, body, "not-the-secret", now_ms)
    assert forged.status_code == 401
    for _ in range(2):
        r = post_webflow(channel, body, "wf-secret", int(time.time() * 1000))
        assert r.status_code == 200, r.text
    contact, item = one_contact_with_item(admin, email="zaphod@heartofgold.ai")
    assert contact["name"] == "Zaphod Beeblebrox"
    assert contact["phones"] == []  # +1 555 000 0000 is not a real number: kept as raw text only
    assert item["data"]["fields"]["Phone Number"] == "15550000000"
    assert contact["source"]["utm_source"] == "google"
    assert item["data"]["fields"]["First Name"] == "Zaphod"
    received(admin, channel["id"], 2)
    assert len(timeline(admin, contact["id"])) == 1
    assert health(admin, channel["id"])["rejected"] == 2


# ---- Yandex Forms ---------------------------------------------------------------------------


def test_yandex_forms_answer_with_token_and_without(admin: Api) -> None:
    channel = make_channel(admin, "yandex_forms", {"token": "ya-token"})
    body = (FIXTURES / "yandex_answer.json").read_bytes()
    bad = httpx.post(channel["webhook_url"], content=body, headers={"Content-Type": "application/json"})
    assert_refused(admin, channel, bad)
    for _ in range(2):
        r = httpx.post(
            channel["webhook_url"],
            content=body,
            headers={"Content-Type": "application/json", "X-CRM-Token": "ya-token"},
        )
        assert r.status_code == 200, r.text
    contact, item = one_contact_with_item(admin, phone="+74951234567")
    assert contact["name"] == "Алексей"
    assert contact["emails"] == ["alexey@example.ru"]
    assert contact["source"]["utm_source"] == "yandex" and contact["source"]["utm_medium"] == "cpc"
    assert item["data"]["fields"]["Услуги"] == "Доставка, Монтаж"
    received(admin, channel["id"], 2)
    assert len(timeline(admin, contact["id"])) == 1
