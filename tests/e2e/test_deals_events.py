"""The deals service reacting to other services' events, published on the real broker as those
services would (envelope, routing key ``<type>.v1``): inbox accept, contact merge/erase/creation,
and tasks keeping a deal's next action."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from shared.events import Envelope, make_event
from tests.support.hub import Api, HubProcess, eventually

pytestmark = pytest.mark.e2e


class Publisher:
    """Publishes envelopes to the hub's event exchange, as ``shared.bus.EventPublisher`` does."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel, namespace: str) -> None:
        self.channel, self.namespace = channel, namespace

    async def publish(self, event_type: str, tenant_id: str, payload: dict[str, Any], **kw: Any) -> Envelope:
        env = make_event(
            event_type, tenant_id=tenant_id, producer=kw.pop("producer", "test"), payload=payload, **kw
        )
        exchange = await self.channel.get_exchange(f"{self.namespace}.events", ensure=False)
        await exchange.publish(
            aio_pika.Message(
                env.model_dump_json().encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=env.event_id,
            ),
            routing_key=env.routing_key,
        )
        return env


@pytest.fixture
async def bus(rabbit: str, hub: HubProcess) -> AsyncIterator[Publisher]:
    conn = await aio_pika.connect_robust(rabbit)
    try:
        yield Publisher(await conn.channel(), hub.namespace)
    finally:
        await conn.close()


@pytest.fixture
def tenant(root: Api) -> tuple[str, Api]:
    r = root.post("/api/v1/tenants", json={"name": f"Events {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return r.json()["tenant_id"], root.as_key(r.json()["api_key"])


def make_pipeline(admin: Api, name: str = "Продажи", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "stages": [{"name": "Новая", "probability": 10}, {"name": "КП", "probability": 50}]}
    r = admin.post("/api/v1/pipelines", json={**body, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def make_deal(admin: Api, pipeline: dict[str, Any], contact_id: str, **extra: Any) -> dict[str, Any]:
    body = {"title": "Сделка", "contact_id": contact_id, "pipeline_id": pipeline["id"], **extra}
    r = admin.post("/api/v1/deals", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def new_contact(admin: Api) -> str:
    """A real contact to hang deals on (the gateway refuses a deal for an unknown contact); the
    contact events below are published by the test itself, as the contacts service would."""
    r = admin.post("/api/v1/contacts", json={"name": f"Клиент {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def deals_of(admin: Api, contact_id: str) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/deals", params={"contact_id": contact_id})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_contact_merged_repoints_the_merged_contacts_deals(
    tenant: tuple[str, Api], bus: Publisher
) -> None:
    tenant_id, admin = tenant
    pipeline = make_pipeline(admin)
    survivor, merged = new_contact(admin), new_contact(admin)
    kept = make_deal(admin, pipeline, survivor)
    moved = [make_deal(admin, pipeline, merged) for _ in range(2)]

    await bus.publish("contact.merged", tenant_id, {"contact_id": survivor, "merged_id": merged})

    eventually(lambda: len(deals_of(admin, survivor)) == 3)
    assert deals_of(admin, merged) == []
    assert {d["id"] for d in deals_of(admin, survivor)} == {kept["id"], *(d["id"] for d in moved)}


async def test_a_merge_in_another_tenant_changes_nothing_here(
    tenant: tuple[str, Api], bus: Publisher, root: Api
) -> None:
    _, admin = tenant
    other_tenant = root.post("/api/v1/tenants", json={"name": "Other"}).json()["tenant_id"]
    pipeline = make_pipeline(admin)
    a, x = new_contact(admin), new_contact(admin)
    deal = make_deal(admin, pipeline, a)
    await bus.publish("contact.merged", other_tenant, {"contact_id": "c-b", "merged_id": a})
    marker = "c-" + uuid.uuid4().hex[:8]
    make_deal(admin, pipeline, x)
    await bus.publish("contact.merged", tenant[0], {"contact_id": marker, "merged_id": x})
    eventually(lambda: len(deals_of(admin, marker)) == 1)  # the later event was handled
    assert admin.get(f"/api/v1/deals/{deal['id']}").json()["contact_id"] == a


async def test_contact_erased_removes_personal_data_from_deals(
    tenant: tuple[str, Api], bus: Publisher
) -> None:
    tenant_id, admin = tenant
    pipeline = make_pipeline(admin)
    person = new_contact(admin)
    deal = make_deal(admin, pipeline, person, title="Иван Петров, склад", amount="100", currency="RUB")
    await bus.publish("contact.erased", tenant_id, {"contact_id": person})
    erased = eventually(
        lambda: (d := admin.get(f"/api/v1/deals/{deal['id']}").json())["title"] == "Erased" and d
    )
    assert erased["amount"] == "100.00" and erased["stage_id"] == deal["stage_id"]  # aggregates keep counting
    r = admin.get("/api/v1/deals", params={"pipeline_id": pipeline["id"]}).json()["items"]
    assert [d["title"] for d in r] == ["Erased"]


async def test_inbox_item_accepted_creates_one_deal_in_the_default_pipelines_first_stage(
    tenant: tuple[str, Api], bus: Publisher
) -> None:
    tenant_id, admin = tenant
    pipeline = make_pipeline(admin)
    first = pipeline["stages"][0]["id"]
    item = {
        "item_id": "item-1",
        "contact_id": "c-inbox",
        "pipeline_id": None,
        "owner_id": None,
        "title": "Заявка",
    }
    await bus.publish("contact.created", tenant_id, {"contact_id": "c-inbox", "source": {"kind": "form", "channel_id": "ch1", "utm_source": "yandex"}})  # fmt: skip
    await bus.publish("inbox.item_accepted", tenant_id, item)
    await bus.publish("inbox.item_accepted", tenant_id, item)  # a second event for the same item

    deals = eventually(lambda: deals_of(admin, "c-inbox"))
    assert deals[0]["stage_id"] == first and deals[0]["pipeline_id"] == pipeline["id"]
    assert deals[0]["title"] == "Заявка"
    # the source arrives either before the deal or after it (separate queues): both end the same
    with_source = eventually(lambda: (d := deals_of(admin, "c-inbox")[0])["source"] and d)
    assert with_source["source"] == {"kind": "form", "channel_id": "ch1", "utm_source": "yandex"}

    # later, a deal in a named pipeline; the repeated item created no second deal
    other = make_pipeline(admin, name="B2B")
    await bus.publish(
        "inbox.item_accepted",
        tenant_id,
        {**item, "item_id": "item-2", "pipeline_id": other["id"], "contact_id": "c-inbox-2"},
    )
    named = eventually(lambda: deals_of(admin, "c-inbox-2"))
    assert named[0]["pipeline_id"] == other["id"] and named[0]["stage_id"] == other["stages"][0]["id"]
    assert len(deals_of(admin, "c-inbox")) == 1


async def test_inbox_accept_naming_an_unknown_pipeline_creates_no_deal(
    tenant: tuple[str, Api], bus: Publisher
) -> None:
    tenant_id, admin = tenant
    make_pipeline(admin)
    item = {
        "item_id": "i-none",
        "contact_id": "c-none",
        "pipeline_id": "no-such",
        "owner_id": None,
        "title": "X",
    }
    await bus.publish("inbox.item_accepted", tenant_id, item)
    # the same queue handles the next item after it: once that deal exists, the first was handled
    await bus.publish("inbox.item_accepted", tenant_id, {**item, "item_id": "i-ok", "contact_id": "c-ok", "pipeline_id": None})  # fmt: skip
    eventually(lambda: deals_of(admin, "c-ok"))
    assert deals_of(admin, "c-none") == []


async def test_task_events_keep_the_deals_next_action_on_its_earliest_open_task(
    tenant: tuple[str, Api], bus: Publisher
) -> None:
    tenant_id, admin = tenant
    pipeline = make_pipeline(admin)
    person = new_contact(admin)
    deal = make_deal(admin, pipeline, person)
    soon = datetime.now(UTC) + timedelta(hours=1)
    later = soon + timedelta(days=1)

    def task(task_id: str, due: datetime, status: str = "open", **extra: Any) -> dict[str, Any]:
        return {
            "task_id": task_id,
            "assignee_id": None,
            "contact_id": person,
            "deal_id": deal["id"],
            "due_at": due.isoformat(),
            "kind": "call",
            "title": f"Позвонить {task_id}",
            "status": status,
            **extra,
        }

    def next_action() -> Any:
        return admin.get(f"/api/v1/deals/{deal['id']}").json()["next_action"]

    await bus.publish("task.created", tenant_id, task("t-later", later), producer="tasks")
    eventually(lambda: (next_action() or {}).get("task_id") == "t-later")
    await bus.publish("task.created", tenant_id, task("t-soon", soon), producer="tasks")
    eventually(lambda: (next_action() or {}).get("task_id") == "t-soon")
    assert next_action()["title"] == "Позвонить t-soon"

    await bus.publish("task.completed", tenant_id, task("t-soon", soon, "done"), producer="tasks")
    eventually(lambda: (next_action() or {}).get("task_id") == "t-later")
    await bus.publish("task.canceled", tenant_id, task("t-later", later, "canceled"), producer="tasks")
    eventually(lambda: next_action() is None)
