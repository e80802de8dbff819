"""Ad-platform hooks through the gateway: Meta Lead Ads (with a local fake Graph API that fails
before answering), Google Ads lead forms, VK Callback API."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_graph import fake_graph
from tests.support.hub import Api, eventually, touches

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "forms"
META_SECRETS = {"app_secret": "m-app-secret", "verify_token": "m-verify", "page_access_token": "m-page-token"}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def make_channel(admin: Api, kind: str, secrets: dict[str, str], **extra: Any) -> dict[str, Any]:
    r = admin.post(
        "/api/v1/channels",
        json={"kind": kind, "name": f"{kind} ads", "intake": "auto", "secrets": secrets, **extra},
    )
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


def one_contact_with_item(
    admin: Api, timeout: float = 15.0, **params: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
        found = contacts(admin, **params)
        if len(found) != 1:
            return None
        items = timeline(admin, found[0]["id"])
        return (found[0], items[0]) if len(items) == 1 else None

    return eventually(probe, timeout=timeout)


def assert_refused(admin: Api, channel: dict[str, Any], r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    h = health(admin, channel["id"])
    assert h["rejected"] == 1 and h["received"] == 0
    assert h["last_error"].startswith("401") and h["last_error_at"]
    assert contacts(admin) == []


# ---- Meta Lead Ads --------------------------------------------------------------------------


def post_meta(channel: dict[str, Any], body: bytes, secret: str = "m-app-secret") -> httpx.Response:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(
        channel["webhook_url"],
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={sig}"},
    )


def test_meta_verification_echoes_the_challenge_exactly(admin: Api) -> None:
    channel = make_channel(admin, "meta_leads", META_SECRETS)
    q = {"hub.mode": "subscribe", "hub.verify_token": "m-verify", "hub.challenge": "1158201444"}
    r = httpx.get(channel["webhook_url"], params=q)
    assert r.status_code == 200 and r.text == "1158201444"
    wrong = httpx.get(channel["webhook_url"], params={**q, "hub.verify_token": "guess"})
    assert wrong.status_code == 403
    assert health(admin, channel["id"])["received"] == 0


def test_meta_lead_is_fetched_from_graph_after_500_and_429(admin: Api) -> None:
    lead = fixture("meta_lead_graph.json")
    with fake_graph({"123123123123": lead}, failures=(500, 429)) as graph:
        channel = make_channel(admin, "meta_leads", META_SECRETS, config={"graph_base_url": graph.url})
        body = (FIXTURES / "meta_leadgen.json").read_bytes()
        bad = post_meta(channel, body, secret="not-the-app-secret")
        assert_refused(admin, channel, bad)
        assert graph.requests == []  # a refused hook never reaches the Graph API
        started = time.monotonic()
        r = post_meta(channel, body)
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 2.0  # answered before the slow Graph fetch
        assert post_meta(channel, body).status_code == 200  # Meta's own retry of the same lead

        contact, item = one_contact_with_item(admin, timeout=30, email="joe@example.com")
        assert graph.hits("123123123123") >= 3
        path, query = graph.requests[0]
        assert path == "/v19.0/123123123123" and query["access_token"] == "m-page-token"
        assert "field_data" in query["fields"]
    assert contact["name"] == "Joe Example"
    assert contact["phones"] == ["+14155550142"]
    assert contact["source"]["kind"] == "meta_leads"
    assert contact["source"]["utm_source"] == "facebook"
    assert contact["source"]["utm_campaign"] == "Autumn leads"
    assert item["kind"] == "ad_lead" and item["direction"] == "in"
    assert item["data"]["fields"]["car_make"] == "Honda"
    assert item["data"]["leadgen_id"] == "123123123123"
    assert item["data"]["utm"]["utm_content"] == "Carousel A"
    eventually(lambda: health(admin, channel["id"])["received"] == 2)
    time.sleep(0.5)
    assert len(timeline(admin, contact["id"])) == 1


def test_meta_lead_not_fetchable_yet_is_retried_later_never_dropped(admin: Api) -> None:
    lead = fixture("meta_lead_graph.json")
    lead = {**lead, "id": "555000111222"}
    with fake_graph({"555000111222": lead}, failures=()) as graph:
        graph.down = True
        channel = make_channel(admin, "meta_leads", META_SECRETS, config={"graph_base_url": graph.url})
        body = json.dumps(
            {
                "object": "page",
                "entry": [
                    {
                        "id": "1",
                        "time": 1,
                        "changes": [{"field": "leadgen", "value": {"leadgen_id": "555000111222"}}],
                    }
                ],
            }
        ).encode()
        assert post_meta(channel, body).status_code == 200
        # The consumer's own quick retries give up; the deferred loop keeps trying later.
        eventually(lambda: graph.hits("555000111222") >= 5, timeout=30)
        assert contacts(admin) == []
        graph.down = False
        contact, item = one_contact_with_item(admin, timeout=30, email="joe@example.com")
    assert item["data"]["leadgen_id"] == "555000111222"
    assert contact["source"]["utm_medium"] == "paid_social"


# ---- Google Ads -----------------------------------------------------------------------------


def post_google(channel: dict[str, Any], lead: dict[str, Any]) -> httpx.Response:
    return httpx.post(channel["webhook_url"], json=lead)


def test_google_ads_lead_with_key_test_leads_and_wrong_key(admin: Api) -> None:
    channel = make_channel(admin, "google_ads", {"key": "g00gle-k3y"})
    lead = fixture("google_ads_lead.json")
    wrong = post_google(channel, {**lead, "google_key": "stolen"})
    assert_refused(admin, channel, wrong)
    test = post_google(channel, {**lead, "is_test": True})
    assert test.status_code == 200 and test.json() == {}
    assert health(admin, channel["id"])["discarded_test"] == 1
    for _ in range(2):
        r = post_google(channel, lead)
        assert r.status_code == 200 and r.json() == {}
    contact, item = one_contact_with_item(admin, email="test@example.com")
    assert contact["name"] == "FirstName LastName"
    assert contact["phones"] == ["+16505550123"]
    assert contact["source"]["utm_source"] == "google" and contact["source"]["utm_medium"] == "cpc"
    assert contact["source"]["utm_campaign"] == "50000000000"
    assert item["kind"] == "ad_lead"
    assert item["data"]["fields"]["What is your budget?"] == "1000-5000"
    eventually(lambda: health(admin, channel["id"])["received"] == 2)
    assert len(timeline(admin, contact["id"])) == 1


# ---- VK -------------------------------------------------------------------------------------


def test_vk_confirmation_answers_the_string_exactly(admin: Api) -> None:
    channel = make_channel(admin, "vk", {"confirmation": "1a2b3c4d", "secret": "vk-s3cret"})
    r = httpx.post(channel["webhook_url"], json=fixture("vk_confirmation.json"))
    assert r.status_code == 200 and r.text == "1a2b3c4d"
    assert health(admin, channel["id"])["received"] == 0


def test_vk_lead_form_answers_ok_once_and_wrong_secret_is_refused(admin: Api) -> None:
    channel = make_channel(admin, "vk", {"confirmation": "1a2b3c4d", "secret": "vk-s3cret"})
    event = fixture("vk_lead_forms_new.json")
    wrong = httpx.post(channel["webhook_url"], json={**event, "secret": "guess"})
    assert_refused(admin, channel, wrong)
    for _ in range(2):
        r = httpx.post(channel["webhook_url"], json=event)
        assert r.status_code == 200 and r.text == "ok"
    contact, item = one_contact_with_item(admin, phone="+79261112233")
    assert contact["name"] == "Ольга Смирнова"
    assert contact["emails"] == ["olga@example.ru"]
    assert contact["source"]["utm_source"] == "vk"
    assert item["kind"] == "ad_lead"
    assert item["data"]["fields"]["Удобное время"] == "После 18:00"
    assert item["data"]["profile_url"] == "https://vk.com/id1234567"
    eventually(lambda: health(admin, channel["id"])["received"] == 2)
    assert len(timeline(admin, contact["id"])) == 1
