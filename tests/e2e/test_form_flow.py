"""The walking skeleton: a website form post becomes a contact with a timeline item, through the
gateway, the real broker and the real MongoDB-protocol server."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.hub import Api, HubProcess, eventually, touches

pytestmark = pytest.mark.e2e


def make_form_channel(admin: Api, **extra: object) -> dict:
    body = {"kind": "form", "name": "Site form", "intake": "auto", **extra}
    r = admin.post("/api/v1/channels", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def find_by_phone(admin: Api, phone: str) -> list[dict]:
    r = admin.get("/api/v1/contacts", params={"phone": phone})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_urlencoded_form_creates_contact_found_by_any_phone_format(admin: Api, hub: HubProcess) -> None:
    channel = make_form_channel(admin)
    assert channel["webhook_url"] == f"{hub.url}/hooks/{channel['id']}"
    r = httpx.post(
        channel["webhook_url"],
        data={
            "name": "Иван Петров",
            "phone": "8 (916) 555-12-34",
            "email": "Ivan.Petrov@Example.RU",
            "comment": "Перезвоните после обеда",
            "utm_source": "yandex",
            "utm_medium": "cpc",
            "utm_campaign": "spring",
        },
    )
    assert r.status_code == 200, r.text

    contacts = eventually(lambda: find_by_phone(admin, "8 (916) 555-12-34"))
    assert len(contacts) == 1
    contact = contacts[0]
    assert contact["phones"] == ["+79165551234"]
    assert contact["emails"] == ["ivan.petrov@example.ru"]
    assert contact["name"] == "Иван Петров"
    assert contact["source"]["utm_source"] == "yandex"
    assert contact["source"]["channel_id"] == channel["id"]
    assert find_by_phone(admin, "+7 916 555 12 34")[0]["id"] == contact["id"]

    tl = touches(admin, contact["id"])
    assert len(tl) == 1
    item = tl[0]
    assert item["kind"] == "form" and item["direction"] == "in"
    assert item["channel_id"] == channel["id"]
    assert item["data"]["fields"]["comment"] == "Перезвоните после обеда"
    assert item["data"]["utm"]["utm_campaign"] == "spring"


def test_json_form_posted_twice_with_same_submission_gives_one_item(admin: Api) -> None:
    channel = make_form_channel(admin)
    payload = {"contact": {"name": "Anna Smith", "phone": "+44 20 7946 0018"}, "submission_id": "sub-42"}
    for _ in range(2):
        r = httpx.post(
            channel["webhook_url"], content=json.dumps(payload), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 200, r.text
    contact = eventually(lambda: find_by_phone(admin, "+442079460018"))[0]

    def timeline_settled() -> list[dict]:
        items = touches(admin, contact["id"])
        return items if items else []

    items = eventually(timeline_settled)
    # Both posts were accepted and processed; give the second one time to land, then count.
    ch = eventually(
        lambda: (c := admin.get(f"/api/v1/channels/{channel['id']}").json())["health"]["received"] == 2 and c
    )
    assert ch["health"]["received"] == 2
    eventually(lambda: len(touches(admin, contact["id"])) == 1)
    items = touches(admin, contact["id"])
    assert len(items) == 1
    assert items[0]["data"]["fields"]["contact.phone"] == "+44 20 7946 0018"


def test_other_tenant_cannot_see_the_contact(admin: Api, root: Api) -> None:
    channel = make_form_channel(admin)
    httpx.post(channel["webhook_url"], data={"name": "Secret", "phone": "+7 903 111 22 33"})
    contact = eventually(lambda: find_by_phone(admin, "+79031112233"))[0]
    other = root.as_key(root.post("/api/v1/tenants", json={"name": "B"}).json()["api_key"])
    assert other.get(f"/api/v1/contacts/{contact['id']}").status_code == 404
    assert find_by_phone(other, "+79031112233") == []
    assert other.get(f"/api/v1/channels/{channel['id']}").status_code == 404
