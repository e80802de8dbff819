"""Reports, plans and marketing costs. Served by the analytics service from its read models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from gateway.deps import GW, Auth
from gateway.lookup import pick
from services.analytics import api
from services.analytics.api import CostIn, PlanIn, ReportName

router = APIRouter(prefix="/api/v1", tags=["analytics"])
M = TypeVar("M", bound=BaseModel)


def _whole(body: M) -> M:
    """Every field of the body goes to the service, defaults and nulls too (a plan or a cost is
    stored as it is sent)."""
    return type(body).model_validate(body.model_dump())


@router.get("/reports/{name}", responses={200: {"content": {"text/csv": {}}}})
async def report(
    p: Auth,
    gw: GW,
    name: Annotated[ReportName, Path(description="Which report")],
    from_: Annotated[datetime | None, Query(alias="from", description="ISO 8601; default: all time")] = None,
    to: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    pipeline_id: str | None = None,
    owner_id: str | None = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """`funnel`, `conversion`, `cycle-time`, `sources`, `plan-vs-actual`, `forecast`, `ltv-cac`,
    `activity`, `response-time`. `?format=csv`: one row per item, the item's fields as the header."""
    request = api.Report.model_validate(
        {
            "name": name,
            "from": from_.isoformat() if from_ else None,
            "to": to.isoformat() if to else None,
            "pipeline_id": pipeline_id,
            "owner_id": owner_id,
            "format": format,
        }
    )
    result = await gw.ask(request, p)
    if format == "csv":
        return Response(
            result["csv"],
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return result


@router.post("/plans", status_code=201)
async def create_plan(body: PlanIn, p: Auth, gw: GW) -> Any:
    """A sales plan for a month (optionally per owner and pipeline); `plan-vs-actual` reads it."""
    p.require("admin")
    return await gw.ask(api.CreatePlan(body=_whole(body)), p)


@router.get("/plans")
async def list_plans(p: Auth, gw: GW) -> Any:
    return await gw.ask(api.ListPlans(), p)


@router.get("/plans/{plan_id}")
async def get_plan(plan_id: str, p: Auth, gw: GW) -> Any:
    return pick(await gw.ask(api.ListPlans(), p), plan_id, "plan")


@router.post("/marketing-costs", status_code=201)
async def create_cost(body: CostIn, p: Auth, gw: GW) -> Any:
    """Spend per source and month: `sources` answers ROI and `ltv-cac` the acquisition cost from it."""
    p.require("admin")
    return await gw.ask(api.CreateCost(body=_whole(body)), p)


@router.get("/marketing-costs")
async def list_costs(p: Auth, gw: GW) -> Any:
    return await gw.ask(api.ListCosts(), p)


@router.get("/marketing-costs/{cost_id}")
async def get_cost(cost_id: str, p: Auth, gw: GW) -> Any:
    return pick(await gw.ask(api.ListCosts(), p), cost_id, "marketing cost")
