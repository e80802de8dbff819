"""The analytics service's typed RPC contract: the reports it builds, plans and marketing costs."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from shared.contract import RpcRequest

SERVICE = "analytics"

ReportName = Literal[
    "funnel",
    "conversion",
    "cycle-time",
    "sources",
    "plan-vs-actual",
    "forecast",
    "ltv-cac",
    "activity",
    "response-time",
]
REPORTS: tuple[str, ...] = get_args(ReportName)

Period = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"])]
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=18, decimal_places=2),
    PlainSerializer(lambda d: str(d.quantize(Decimal("0.01"))), return_type=str),
]
"""Money: a decimal string with two places on the wire (``"1999.99"``)."""


class PlanIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"period": "2026-11", "amount": "1500000", "deals": 12}]},
    )
    period: Period
    amount: Money
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
    amount: Money
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$")


class Request(RpcRequest):
    """One RPC call on the analytics service."""

    SERVICE: ClassVar[str] = SERVICE


class Report(Request):
    """One report over ``[from, to)`` (ISO 8601), as JSON or as CSV text (``{"csv"}``)."""

    METHOD = "report"
    model_config = ConfigDict(populate_by_name=True)
    name: ReportName
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    pipeline_id: str | None = None
    owner_id: str | None = None
    format: Literal["json", "csv"] = "json"


class CreatePlan(Request):
    METHOD = "create_plan"
    body: PlanIn


class ListPlans(Request):
    METHOD = "list_plans"


class CreateCost(Request):
    METHOD = "create_cost"
    body: CostIn


class ListCosts(Request):
    METHOD = "list_costs"
