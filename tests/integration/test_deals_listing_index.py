"""Listing 10,000 deals of one pipeline by stage: the query the service runs is served by the
tenant+pipeline+stage+_id index (the plan shows IXSCAN, no COLLSCAN, and reads only that stage's
documents) and pages through every deal of the stage exactly once. Real MongoDB-protocol server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.deals import domain as d
from services.deals.service import DealsService
from services.deals.store import IX_PIPELINE_STAGE
from shared.clock import new_id
from tests.support.services import deals_service

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(mongo_url: str) -> AsyncIterator[DealsService]:
    async with deals_service(mongo_url) as svc:
        yield svc


TENANT = "t-index"
N = 10_000


def stages_of_plan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out, todo = [], [plan]
    while todo:
        node = todo.pop()
        out.append(node)
        todo += [node[k] for k in ("inputStage",) if k in node] + list(node.get("inputStages", []))
    return out


ADMIN = {"tenant_id": TENANT, "user_id": "u-admin", "role": "admin", "settings": {}}


async def seed(svc: DealsService) -> tuple[d.Pipeline, dict[str, int]]:
    body = {
        "name": "Sales",
        "stages": [{"name": n, "probability": p} for n, p in (("A", 10), ("B", 40), ("C", 70))],
    }
    public = await svc.create_pipeline(ADMIN, {"body": body})
    pipeline = d.Pipeline.from_doc(await svc.db.pipelines.find_one({"_id": public["id"]}))
    stage_cycle = itertools.cycle([s.id for s in pipeline.open_stages])
    base = datetime(2025, 1, 1, tzinfo=UTC)
    docs, counts = [], dict.fromkeys((s.id for s in pipeline.stages), 0)
    for i in range(N):
        stage = next(stage_cycle)
        data = {
            "title": f"Deal {i}",
            "contact_id": f"c{i % 700}",
            "stage_id": stage,
            "amount": i,
            "currency": "RUB",
        }
        deal, _ = d.create_deal(TENANT, data, pipeline, new_id, base + timedelta(minutes=i))
        docs.append({**deal.to_doc(), "rev": 0})
        counts[stage] += 1
    for chunk in range(0, N, 2000):
        await svc.db.deals.insert_many(docs[chunk : chunk + 2000])
    # another tenant's deals in the same collection must not be read either
    await svc.db.deals.insert_many([{**doc, "_id": new_id(), "tenant_id": "t-other"} for doc in docs[:500]])
    return pipeline, counts


async def test_listing_by_pipeline_and_stage_is_index_backed_and_paginated(service: DealsService) -> None:
    pipeline, counts = await seed(service)
    stage = pipeline.open_stages[1]
    args = {"filters": {"pipeline_id": pipeline.id, "stage_id": stage.id}, "limit": 500}

    query = await service.listing_query(ADMIN, args)
    assert query is not None and query["hint"] == IX_PIPELINE_STAGE
    explain = await service.db.command(
        "explain",
        {
            "find": "deals",
            "filter": query["filter"],
            "sort": dict(query["sort"]),
            "limit": query["limit"],
            "hint": dict(query["hint"]),
        },
        verbosity="executionStats",
    )
    stages = stages_of_plan(explain["queryPlanner"]["winningPlan"])
    names = [s["stage"] for s in stages]
    assert "IXSCAN" in names and "COLLSCAN" not in names, names
    ixscan = next(s for s in stages if s["stage"] == "IXSCAN")
    assert list(ixscan["keyPattern"]) == [k for k, _ in IX_PIPELINE_STAGE]
    assert explain["executionStats"]["totalDocsExamined"] <= counts[stage.id] < N

    # the planner picks the same index unhinted, too (it is the natural one for this filter)
    unhinted = await service.db.command(
        "explain", {"find": "deals", "filter": query["filter"], "sort": {"_id": -1}, "limit": 51}
    )
    assert "IXSCAN" in [s["stage"] for s in stages_of_plan(unhinted["queryPlanner"]["winningPlan"])]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        result = await service.list_deals(ADMIN, {**args, "cursor": cursor})
        assert all(item["stage_id"] == stage.id for item in result["items"])
        seen += [item["id"] for item in result["items"]]
        cursor = result["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == counts[stage.id]
    assert seen == sorted(seen, reverse=True)


async def test_a_managers_listing_keeps_the_index_and_sees_own_and_unowned(service: DealsService) -> None:
    body = {"name": "Sales", "stages": [{"name": "A", "probability": 10}]}
    public = await service.create_pipeline(ADMIN, {"body": body})
    manager = {"tenant_id": TENANT, "user_id": "u-m", "role": "manager", "settings": {}}
    for owner in ("u-m", None, "u-other"):
        await service.create_deal(
            ADMIN,
            {"body": {"title": "X", "contact_id": "c1", "pipeline_id": public["id"], "owner_id": owner}},
        )
    stage_id = public["stages"][0]["id"]
    args = {"filters": {"pipeline_id": public["id"], "stage_id": stage_id}, "limit": 50}
    listed = await service.list_deals(manager, args)
    assert sorted(str(i["owner_id"]) for i in listed["items"]) == ["None", "u-m"]
    query = await service.listing_query(manager, args)
    assert query is not None
    explain = await service.db.command(
        "explain",
        {"find": "deals", "filter": query["filter"], "sort": {"_id": -1}, "hint": dict(query["hint"])},
    )
    assert "IXSCAN" in [s["stage"] for s in stages_of_plan(explain["queryPlanner"]["winningPlan"])]
    # asking for another owner's deals as a manager answers nothing, without a query
    assert await service.listing_query(manager, {"filters": {"owner_id": "u-other"}}) is None
