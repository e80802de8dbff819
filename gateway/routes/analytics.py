"""Reports, plans and marketing costs. Served by the analytics service from its read models."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth
from gateway.lookup import pick
from services.analytics.api import ReportName

router = APIRouter(prefix="/api/v1", tags=["analytics"])

Period = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"])]


class PlanIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"period": "2026-11", "amount": "1500000", "deals": 12}]},
    )
    period: Period
    amount: Decimal = Field(ge=0, max_digits=18, decimal_places=2)
    deals: int | None = Field(default=None, ge=0)
    owner_id: str | None = None
    pipeline_id: str | None = None


class CostIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"source": "yandex", "period": "2026-11", "amount": "45000", "currency": "RUB"}]
        },
    )
    source: str = Field(min_length=1, max_length=100, description="utm_source or channel kind")
    period: Period
    amount: Decimal = Field(ge=0, max_digits=18, decimal_places=2)
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$")


def _money(body: PlanIn | CostIn) -> dict[str, Any]:
    """Money as a decimal string with two places (``"1999.99"``)."""
    return {**body.model_dump(mode="json"), "amount": str(body.amount.quantize(Decimal("0.01")))}


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
    result = await gw.call(
        "analytics",
        "report",
        p,
        name=name,
        pipeline_id=pipeline_id,
        owner_id=owner_id,
        format=format,
        **{"from": from_.isoformat() if from_ else None, "to": to.isoformat() if to else None},
    )
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
    return await gw.call("analytics", "create_plan", p, body=_money(body))


@router.get("/plans")
async def list_plans(p: Auth, gw: GW) -> Any:
    return await gw.call("analytics", "list_plans", p)


@router.get("/plans/{plan_id}")
async def get_plan(plan_id: str, p: Auth, gw: GW) -> Any:
    return pick(await gw.call("analytics", "list_plans", p), plan_id, "plan")


@router.post("/marketing-costs", status_code=201)
async def create_cost(body: CostIn, p: Auth, gw: GW) -> Any:
    """Spend per source and month: `sources` answers ROI and `ltv-cac` the acquisition cost from it."""
    p.require("admin")
    return await gw.call("analytics", "create_cost", p, body=_money(body))


@router.get("/marketing-costs")
async def list_costs(p: Auth, gw: GW) -> Any:
    return await gw.call("analytics", "list_costs", p)


@router.get("/marketing-costs/{cost_id}")
async def get_cost(cost_id: str, p: Auth, gw: GW) -> Any:
    return pick(await gw.call("analytics", "list_costs", p), cost_id, "marketing cost")
