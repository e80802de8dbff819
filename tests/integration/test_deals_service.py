"""The deals service's handlers on a real MongoDB-protocol server, called directly (no broker):
pipeline edits that move and re-weight more deals than one batch, late task events, erasure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.deals import domain as d
from services.deals.service import BATCH, DealsService
from shared.clock import new_id
from shared.events import Envelope, make_event
from tests.support.services import deals_service

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(mongo_url: str) -> AsyncIterator[DealsService]:
    async with deals_service(mongo_url) as svc:
        yield svc


TENANT = "t-svc"
ADMIN = {"tenant_id": TENANT, "user_id": "u-admin", "role": "admin", "settings": {}}


def sent(svc: DealsService) -> list[Envelope]:
    return svc.rt.publisher.sent  # type: ignore[attr-defined]


async def pipeline(svc: DealsService) -> dict[str, Any]:
    body = {
        "name": "S",
        "stages": [{"name": n, "probability": p} for n, p in (("A", 10), ("B", 40), ("C", 70))],
    }
    return await svc.create_pipeline(ADMIN, {"body": body})


async def seed_deals(svc: DealsService, public: dict[str, Any], stage_id: str, n: int) -> None:
    p = d.Pipeline.from_doc(await svc.db.pipelines.find_one({"_id": public["id"]}))
    at = datetime.now(UTC) - timedelta(days=1)
    docs = []
    for i in range(n):
        deal, _ = d.create_deal(
            TENANT, {"title": f"D{i}", "contact_id": f"c{i}", "stage_id": stage_id}, p, new_id, at
        )
        docs.append({**deal.to_doc(), "rev": 0})
    await svc.db.deals.insert_many(docs)


async def test_deleting_a_stage_moves_more_deals_than_a_batch_and_reweights_the_target(
    service: DealsService,
) -> None:
    public = await pipeline(service)
    a, b, c = (s["id"] for s in public["stages"][:3])
    n = BATCH * 2 + 17
    await seed_deals(service, public, b, n)
    await seed_deals(service, public, c, 3)
    sent(service).clear()

    with pytest.raises(d.Conflict) as refused:
        await service.update_pipeline(ADMIN, {"pipeline_id": public["id"], "changes": {"stages": [{"id": a}, {"id": c}]}})  # fmt: skip
    assert refused.value.code == "stage_has_deals" and refused.value.status == 409
    assert await service.db.deals.count_documents({"stage_id": b}) == n

    changes = {"stages": [{"id": a}, {"id": c, "probability": 75}], "stage_moves": {b: c}}
    saved = await service.update_pipeline(ADMIN, {"pipeline_id": public["id"], "changes": changes})
    assert [s["id"] for s in saved["stages"][:2]] == [a, c]
    assert await service.db.deals.count_documents({"stage_id": b}) == 0
    assert await service.db.deals.count_documents({"stage_id": c, "probability": 75}) == n + 3
    moves = [e for e in sent(service) if e.event_type == "deal.stage_changed"]
    assert len(moves) == n and {(e.payload["from_stage_id"], e.payload["to_stage_id"]) for e in moves} == {
        (b, c)
    }
    assert all(e.payload["time_in_stage_s"] >= 86_000 for e in moves)
    reweighted = [e for e in sent(service) if e.event_type == "deal.updated"]
    assert len(reweighted) == 3  # the moved ones took 75 with the move already
    assert [e.event_type for e in sent(service)].count("pipeline.updated") == 1


async def test_a_late_task_event_does_not_undo_a_newer_one(service: DealsService) -> None:
    public = await pipeline(service)
    deal = await service.create_deal(
        ADMIN, {"body": {"title": "X", "contact_id": "c1", "pipeline_id": public["id"]}}
    )
    due = datetime.now(UTC) + timedelta(hours=2)
    payload = {
        "task_id": "t1",
        "deal_id": deal["id"],
        "due_at": due.isoformat(),
        "title": "Call",
        "kind": "call",
        "status": "open",
    }
    t0 = datetime.now(UTC)
    created = make_event("task.created", tenant_id=TENANT, producer="tasks", payload=payload, occurred_at=t0)
    completed = make_event(
        "task.completed",
        tenant_id=TENANT,
        producer="tasks",
        payload={**payload, "status": "done"},
        occurred_at=t0 + timedelta(seconds=1),
    )
    await service.on_task_event(completed)  # delivered first (another queue)
    await service.on_task_event(created)
    assert (await service.get_deal(ADMIN, {"deal_id": deal["id"]}))["next_action"] is None

    await service.on_task_event(
        make_event("task.created", tenant_id=TENANT, producer="tasks", payload={**payload, "task_id": "t2"})
    )
    got = (await service.get_deal(ADMIN, {"deal_id": deal["id"]}))["next_action"]
    assert got["task_id"] == "t2" and got["title"] == "Call"
    await service.on_task_event(created)  # a redelivery changes nothing
    assert (await service.get_deal(ADMIN, {"deal_id": deal["id"]}))["next_action"]["task_id"] == "t2"


async def test_erasure_blanks_titles_also_for_the_next_action_to_come(service: DealsService) -> None:
    public = await pipeline(service)
    deal = await service.create_deal(
        ADMIN,
        {
            "body": {
                "title": "Иван Петров",
                "contact_id": "c-pii",
                "pipeline_id": public["id"],
                "custom": {"x": 1},
            }
        },
    )
    await service.on_contact_erased(make_event("contact.erased", tenant_id=TENANT, producer="contacts", payload={"contact_id": "c-pii"}))  # fmt: skip
    due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    await service.on_task_event(
        make_event(
            "task.created",
            tenant_id=TENANT,
            producer="tasks",
            payload={
                "task_id": "t9",
                "deal_id": deal["id"],
                "due_at": due,
                "title": "Позвонить Ивану",
                "kind": "call",
                "status": "open",
            },
        )
    )
    erased = await service.get_deal(ADMIN, {"deal_id": deal["id"]})
    assert erased["title"] == "Erased" and erased["custom"] == {}
    assert erased["next_action"]["task_id"] == "t9" and erased["next_action"]["title"] == ""
    exported = await service.export_contact(ADMIN, {"contact_id": "c-pii"})
    assert [x["id"] for x in exported["deals"]] == [deal["id"]]
    assert "Иван" not in str(exported)


async def test_rule_moves_a_deal_and_its_events_carry_the_rule_causation(service: DealsService) -> None:
    public = await pipeline(service)
    deal = await service.create_deal(
        ADMIN, {"body": {"title": "X", "contact_id": "c1", "pipeline_id": public["id"]}}
    )
    target = public["stages"][1]["id"]
    command = make_event(
        "rule.move_deal_requested",
        tenant_id=TENANT,
        producer="tasks",
        payload={
            "deal_id": deal["id"],
            "stage_id": target,
            "caused_by_rule": "r1",
            "rule_chain": ["r1"],
            "caused_by_subject": deal["id"],
            "action_key": "rule:r1:e1:0",
        },
    )
    await service.on_rule_move_deal(command)
    await service.on_rule_move_deal(command)  # redelivered: one move
    moved = await service.get_deal(ADMIN, {"deal_id": deal["id"]})
    assert moved["stage_id"] == target and len(moved["stage_history"]) == 2
    changed = [e for e in sent(service) if e.event_type == "deal.stage_changed"]
    assert len(changed) == 1
    assert changed[0].payload["caused_by_rule"] == "r1" and changed[0].payload["rule_chain"] == ["r1"]


async def test_rule_naming_a_stage_of_another_pipeline_changes_nothing(service: DealsService) -> None:
    public = await pipeline(service)
    other = await pipeline(service)
    deal = await service.create_deal(
        ADMIN, {"body": {"title": "X", "contact_id": "c1", "pipeline_id": public["id"]}}
    )
    await service.on_rule_move_deal(
        make_event(
            "rule.move_deal_requested",
            tenant_id=TENANT,
            producer="tasks",
            payload={
                "deal_id": deal["id"],
                "stage_id": other["stages"][1]["id"],
                "caused_by_rule": "r1",
                "action_key": "rule:r1:e2:0",
            },
        )
    )
    assert (await service.get_deal(ADMIN, {"deal_id": deal["id"]}))["stage_id"] == deal["stage_id"]


async def test_rule_assigns_a_deal_owner(service: DealsService) -> None:
    public = await pipeline(service)
    deal = await service.create_deal(
        ADMIN, {"body": {"title": "X", "contact_id": "c1", "pipeline_id": public["id"]}}
    )
    await service.on_rule_assign_owner(
        make_event(
            "rule.assign_owner_requested",
            tenant_id=TENANT,
            producer="tasks",
            payload={
                "deal_id": deal["id"],
                "user_id": "u-7",
                "caused_by_rule": "r2",
                "action_key": "rule:r2:e3:0",
            },
        )
    )
    assert (await service.get_deal(ADMIN, {"deal_id": deal["id"]}))["owner_id"] == "u-7"
