"""The inbox ("Unsorted") through the gateway: unknown senders on inbox channels wait there until a
manager accepts, links or rejects them."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import httpx
import pytest

from shared.bus import Topology
from tests.support.hub import Api, HubProcess, eventually, touches

pytestmark = pytest.mark.e2e


def inbox_channel(admin: Api, **extra: Any) -> dict[str, Any]:
    body = {"kind": "form", "name": f"inbox {uuid.uuid4().hex[:4]}", "intake": "inbox", **extra}
    r = admin.post("/api/v1/channels", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def pending(admin: Api, n: int) -> list[dict[str, Any]]:
    def got() -> list[dict[str, Any]] | None:
        r = admin.get("/api/v1/inbox", params={"status": "pending"})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        return items if len(items) == n else None

    return eventually(got)


def timeline(admin: Api, contact_id: str) -> list[dict[str, Any]]:
    return touches(admin, contact_id)


def test_unknown_sender_waits_in_the_inbox_and_accept_creates_the_contact(admin: Api) -> None:
    ch = inbox_channel(admin)
    httpx.post(
        ch["webhook_url"], data={"name": "Лид Первый", "phone": "+7 916 100-00-01", "utm_source": "vk"}
    )
    httpx.post(ch["webhook_url"], data={"name": "Лид Первый", "phone": "89161000001", "comment": "ещё раз"})
    items = pending(admin, 2)
    assert admin.get("/api/v1/contacts", params={"phone": "+79161000001"}).json()["items"] == []
    item = items[-1]  # the older one
    assert item["sender"]["phones"] == ["+79161000001"] and item["contact_id"] is None
    assert item["interaction"]["kind"] == "form" and item["channel_id"] == ch["id"]
    assert admin.get(f"/api/v1/inbox/{item['id']}").json()["id"] == item["id"]

    r = admin.post(f"/api/v1/inbox/{item['id']}/accept", json={})
    assert r.status_code == 200, r.text
    accepted = r.json()
    assert accepted["status"] == "accepted" and accepted["contact_id"]
    contact = admin.get(f"/api/v1/contacts/{accepted['contact_id']}").json()
    assert contact["name"] == "Лид Первый" and contact["phones"] == ["+79161000001"]
    assert contact["source"]["channel_id"] == ch["id"] and contact["source"]["utm_source"] == "vk"
    # the sender's other pending item went along
    assert len(timeline(admin, contact["id"])) == 2
    assert admin.get("/api/v1/inbox", params={"status": "pending"}).json()["items"] == []
    linked = admin.get("/api/v1/inbox", params={"status": "linked"}).json()["items"]
    assert [i["contact_id"] for i in linked] == [contact["id"]]
    # accepting twice is a conflict; the next touch from that phone goes straight to the card
    assert admin.post(f"/api/v1/inbox/{item['id']}/accept").status_code == 409
    httpx.post(ch["webhook_url"], data={"phone": "+79161000001", "comment": "третий"})
    eventually(lambda: len(timeline(admin, contact["id"])) == 3)
    assert admin.get("/api/v1/inbox", params={"status": "pending"}).json()["items"] == []


def test_accept_announces_the_item_for_a_deal(admin: Api, hub: HubProcess, rabbit: str) -> None:
    """``inbox.item_accepted`` carries what deals needs: the contact, the pipeline, the owner."""

    def scenario() -> tuple[dict[str, Any], str]:
        ch = inbox_channel(admin)
        httpx.post(ch["webhook_url"], data={"name": "Сделка Будет", "email": "deal.lead@example.ru"})
        item = pending(admin, 1)[0]
        r = admin.post(f"/api/v1/inbox/{item['id']}/accept", json={"pipeline_id": "pipe-1"})
        assert r.status_code == 200, r.text
        return r.json(), item["id"]

    async def go() -> tuple[dict[str, Any], dict[str, Any], str]:
        conn = await aio_pika.connect(rabbit)
        try:
            channel = await conn.channel()
            queue = await channel.declare_queue(
                f"{hub.namespace}.test.{uuid.uuid4().hex[:8]}",
                exclusive=True,  # gone with the connection
            )
            await queue.bind(Topology(hub.namespace).events, routing_key="inbox.item_accepted.v1")
            accepted, item_id = await asyncio.to_thread(scenario)
            for _ in range(150):
                message = await queue.get(fail=False, no_ack=True)
                if message is not None:
                    return json.loads(message.body), accepted, item_id
                await asyncio.sleep(0.1)
            raise AssertionError("no inbox.item_accepted event")
        finally:
            await conn.close()

    env, accepted, item_id = asyncio.run(go())
    assert env["event_type"] == "inbox.item_accepted"
    assert env["payload"] == {
        "item_id": item_id,
        "contact_id": accepted["contact_id"],
        "pipeline_id": "pipe-1",
        "owner_id": None,
        "title": "Сделка Будет",
    }


def test_link_attaches_the_item_to_an_existing_contact(admin: Api) -> None:
    ch = inbox_channel(admin)
    known = admin.post("/api/v1/contacts", json={"name": "Known Person", "phones": ["+79162000002"]}).json()
    httpx.post(ch["webhook_url"], data={"name": "K.P.", "email": "kp.other@example.ru", "comment": "тот же"})
    item = pending(admin, 1)[0]
    assert admin.post(f"/api/v1/inbox/{item['id']}/link", json={"contact_id": "nope"}).status_code == 422
    r = admin.post(f"/api/v1/inbox/{item['id']}/link", json={"contact_id": known["id"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "linked" and r.json()["contact_id"] == known["id"]
    items = timeline(admin, known["id"])
    assert len(items) == 1 and items[0]["data"]["fields"]["comment"] == "тот же"
    contact = admin.get(f"/api/v1/contacts/{known['id']}").json()
    assert contact["emails"] == ["kp.other@example.ru"]  # learnt: the next email resolves by itself
    auto = admin.post("/api/v1/channels", json={"kind": "form", "name": "auto", "intake": "auto"}).json()
    httpx.post(auto["webhook_url"], data={"email": "KP.other@example.ru", "comment": "again"})
    eventually(lambda: len(timeline(admin, known["id"])) == 2)


def test_reject_keeps_the_item_for_audit_and_off_every_card(admin: Api) -> None:
    ch = inbox_channel(admin)
    httpx.post(ch["webhook_url"], data={"name": "Spammer", "phone": "+79163000003", "comment": "buy now"})
    item = pending(admin, 1)[0]
    r = admin.post(f"/api/v1/inbox/{item['id']}/reject")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    rejected = admin.get("/api/v1/inbox", params={"status": "rejected"}).json()["items"]
    assert [i["id"] for i in rejected] == [item["id"]]
    assert rejected[0]["interaction"]["data"]["fields"]["comment"] == "buy now"
    assert admin.get("/api/v1/contacts", params={"phone": "+79163000003"}).json()["items"] == []
    assert admin.get("/api/v1/contacts").json()["items"] == []
    assert admin.post(f"/api/v1/inbox/{item['id']}/link", json={"contact_id": "x"}).status_code == 409


def test_inbox_respects_roles_and_tenants(admin: Api, root: Api) -> None:
    ch = inbox_channel(admin)
    httpx.post(ch["webhook_url"], data={"phone": "+79164000004"})
    item = pending(admin, 1)[0]
    viewer_key = admin.post(
        "/api/v1/users", json={"name": "V", "email": f"v{uuid.uuid4().hex[:6]}@ex.com", "role": "viewer"}
    ).json()["api_key"]
    viewer = admin.as_key(viewer_key)
    assert viewer.post(f"/api/v1/inbox/{item['id']}/accept").status_code == 403
    assert viewer.get(f"/api/v1/inbox/{item['id']}").status_code == 200
    other = root.as_key(root.post("/api/v1/tenants", json={"name": "Other"}).json()["api_key"])
    assert other.get(f"/api/v1/inbox/{item['id']}").status_code == 404
    assert other.post(f"/api/v1/inbox/{item['id']}/reject").status_code == 404
    assert other.get("/api/v1/inbox").json()["items"] == []
