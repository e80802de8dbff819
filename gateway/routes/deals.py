"""Pipelines, loss reasons and deals. Served by the deals service.

Money is ``amount`` as a decimal string (``"1999.99"``; a request may send a number) with an ISO 4217
``currency``; probabilities are integer percent. Validation of the business rules (stage ids,
amounts, reasons) happens in the service, whose 422s name each offending field.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth, Cursor, Limit
from gateway.lookup import pick

router = APIRouter(prefix="/api/v1", tags=["deals"])

Amount = str | int | float


class StageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, description="An existing stage's id (PATCH: keep/rename it).")
    name: str | None = Field(default=None, max_length=200)
    probability: int | None = Field(default=None, description="Integer percent 0-100.")
    kind: str | None = Field(default=None, description="`open` (default), or `won`/`lost` to name those.")


class PipelineIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Продажи",
                    "stages": [
                        {"name": "Новая заявка", "probability": 10},
                        {"name": "Переговоры", "probability": 40},
                        {"name": "Счёт выставлен", "probability": 80},
                    ],
                    "default": True,
                }
            ]
        },
    )
    name: str = Field(max_length=200)
    stages: list[StageIn] = Field(max_length=100)
    default: bool | None = None


class PipelinePatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "stages": [{"id": "<kept stage id>"}, {"name": "New stage", "probability": 50}],
                    "stage_moves": {"<deleted stage id>": "<kept stage id>"},
                }
            ]
        },
    )
    name: str | None = Field(default=None, max_length=200)
    default: bool | None = None
    stages: list[StageIn] | None = Field(
        default=None,
        max_length=100,
        description="The full list of open stages in order: with `id` keeps a stage, without adds "
        "one; an open stage left out is deleted (409 `stage_has_deals` while it holds deals, unless "
        "`stage_moves` names where they go).",
    )
    stage_moves: dict[str, str] | None = Field(
        default=None, description="Deleted stage id → the open stage its deals move to."
    )


class Stage(BaseModel):
    id: str
    name: str
    probability: int
    kind: str


class PipelineOut(BaseModel):
    id: str
    name: str
    stages: list[Stage]
    default: bool
    created_at: str
    updated_at: str


class PipelinePage(BaseModel):
    items: list[PipelineOut]
    next_cursor: str | None = None


class LossReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Дорого"}]})
    name: str = Field(max_length=500)


class LossReason(BaseModel):
    name: str


class LossReasonPage(BaseModel):
    items: list[LossReason]
    next_cursor: str | None = None


class DealIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Поставка оборудования",
                    "contact_id": "<contact id>",
                    "pipeline_id": "<pipeline id>",
                    "amount": "1999.99",
                    "currency": "RUB",
                    "expected_close": "2026-06-30",
                }
            ]
        },
    )
    title: str = Field(max_length=500)
    contact_id: str
    pipeline_id: str | None = Field(default=None, description="Default: the tenant's default pipeline.")
    stage_id: str | None = Field(default=None, description="Default: the pipeline's first stage.")
    amount: Amount | None = Field(default=None, description='Decimal string ("1999.99") or a number.')
    currency: str | None = Field(default=None, description="ISO 4217, e.g. RUB.")
    owner_id: str | None = None
    company_id: str | None = None
    probability: int | None = Field(default=None, description="Explicit percent; default follows the stage.")
    expected_close: str | None = Field(default=None, description="YYYY-MM-DD")
    lost_reason: str | None = Field(default=None, description="Only when created straight into `lost`.")
    custom: dict[str, Any] | None = None


class DealPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"amount": 2500, "probability": None}]}
    )
    title: str | None = Field(default=None, max_length=500)
    contact_id: str | None = None
    pipeline_id: str | None = Field(default=None, description="May only be sent unchanged.")
    stage_id: str | None = Field(default=None, description="A move (see POST /deals/{id}/move).")
    lost_reason: str | None = None
    amount: Amount | None = None
    currency: str | None = None
    owner_id: str | None = None
    company_id: str | None = None
    probability: int | None = Field(default=None, description="`null` makes it follow the stage again.")
    expected_close: str | None = None
    custom: dict[str, Any] | None = None


class MoveIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"stage_id": "<lost stage id>", "lost_reason": "Дорого"}]},
    )
    stage_id: str
    lost_reason: str | None = Field(default=None, description="Required for a move to the `lost` stage.")


class StageVisit(BaseModel):
    stage_id: str
    entered_at: str
    left_at: str | None = None


class NextAction(BaseModel):
    task_id: str
    title: str
    due_at: str


class DealOut(BaseModel):
    id: str
    title: str
    contact_id: str
    company_id: str | None = None
    pipeline_id: str
    stage_id: str
    status: str
    amount: str | None = None
    currency: str | None = None
    owner_id: str | None = None
    probability: int
    probability_explicit: bool = False
    weighted_amount: str | None = None
    expected_close: str | None = None
    next_action: NextAction | None = None
    source: dict[str, Any] | None = None
    won_at: str | None = None
    lost_at: str | None = None
    lost_reason: str | None = None
    reopened_at: str | None = None
    stage_history: list[StageVisit]
    custom: dict[str, Any] = Field(default_factory=dict)
    created_at: str
    updated_at: str


class DealPage(BaseModel):
    items: list[DealOut]
    next_cursor: str | None = None


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage_id: str | None = None
    stage: str | None = Field(default=None, description="The stage's name, instead of stage_id.")
    entered_at: str
    lost_reason: str | None = None


class ImportedDeal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: str | None = Field(default=None, description="Your id: a re-run skips what was imported.")
    title: str = Field(max_length=500)
    contact_id: str
    pipeline_id: str | None = None
    stage_id: str | None = None
    amount: Amount | None = None
    currency: str | None = None
    owner_id: str | None = None
    company_id: str | None = None
    probability: int | None = None
    expected_close: str | None = None
    lost_reason: str | None = None
    custom: dict[str, Any] | None = None
    source: dict[str, Any] | None = Field(default=None, description="First touch: channel_id, kind, utm_*.")
    created_at: str | None = None
    stage_history: list[HistoryEntry] = Field(min_length=1, description="Oldest first; the last is current.")


class ImportIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "pipeline_id": "<pipeline id>",
                    "deals": [
                        {
                            "external_id": "amo-1001",
                            "title": "Старая сделка",
                            "contact_id": "<contact id>",
                            "amount": "50000",
                            "currency": "RUB",
                            "stage_history": [
                                {"stage": "Новая заявка", "entered_at": "2025-01-10T09:00:00+03:00"},
                                {"stage": "Won", "entered_at": "2025-02-01T12:00:00+03:00"},
                            ],
                        }
                    ],
                }
            ]
        },
    )
    pipeline_id: str | None = None
    deals: list[ImportedDeal] = Field(min_length=1, max_length=500)


class ImportResultItem(BaseModel):
    index: int
    id: str
    created: bool


class ImportOut(BaseModel):
    created: int
    items: list[ImportResultItem]


# ---- pipelines ----------------------------------------------------------------------------------


@router.post("/pipelines", status_code=201, response_model=PipelineOut)
async def create_pipeline(body: PipelineIn, p: Auth, gw: GW) -> Any:
    """Admin. The stages given are the open ones in order; a `won` (100) and a `lost` (0) stage are
    added. The tenant's first pipeline becomes its default one."""
    return await gw.call("deals", "create_pipeline", p, body=body.model_dump(exclude_unset=True))


@router.get("/pipelines", response_model=PipelinePage)
async def list_pipelines(p: Auth, gw: GW) -> Any:
    return await gw.call("deals", "list_pipelines", p)


@router.get("/pipelines/{pipeline_id}", response_model=PipelineOut)
async def get_pipeline(pipeline_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("deals", "get_pipeline", p, pipeline_id=pipeline_id)


@router.patch("/pipelines/{pipeline_id}", response_model=PipelineOut)
async def patch_pipeline(pipeline_id: str, body: PipelinePatch, p: Auth, gw: GW) -> Any:
    """Admin. Rename, make default, re-order, re-weight, add and delete stages."""
    return await gw.call(
        "deals", "update_pipeline", p, pipeline_id=pipeline_id, changes=body.model_dump(exclude_unset=True)
    )


@router.delete("/pipelines/{pipeline_id}", status_code=204)
async def delete_pipeline(pipeline_id: str, p: Auth, gw: GW) -> Response:
    """Admin. Only a pipeline without deals (open, won or lost) can go: 409 `pipeline_has_deals`
    otherwise. Deleting the default pipeline makes the oldest remaining one the default."""
    await gw.call("deals", "delete_pipeline", p, pipeline_id=pipeline_id)
    return Response(status_code=204)


@router.delete("/pipelines/{pipeline_id}/stages/{stage_id}", response_model=PipelineOut)
async def delete_stage(
    pipeline_id: str,
    stage_id: str,
    p: Auth,
    gw: GW,
    move_to: str | None = Query(default=None, description="The open stage its deals move to."),
) -> Any:
    """Admin. 409 `stage_has_deals` while the stage holds deals and `move_to` is not given."""
    return await gw.call(
        "deals", "delete_stage", p, pipeline_id=pipeline_id, stage_id=stage_id, move_to=move_to
    )


# ---- loss reasons -------------------------------------------------------------------------------


@router.get("/loss-reasons", response_model=LossReasonPage)
async def list_loss_reasons(p: Auth, gw: GW) -> Any:
    """The tenant's list; while it is empty any non-empty text is accepted as a reason."""
    return await gw.call("deals", "list_loss_reasons", p)


@router.get("/loss-reasons/{name}", response_model=LossReason)
async def get_loss_reason(name: str, p: Auth, gw: GW) -> Any:
    """One reason of the list (reasons are identified by their text)."""
    return pick(await gw.call("deals", "list_loss_reasons", p), name, "loss reason", "name")


@router.post("/loss-reasons", status_code=201, response_model=LossReason)
async def add_loss_reason(body: LossReasonIn, p: Auth, gw: GW) -> Any:
    """Admin. 409 when the reason exists (in any letter case)."""
    return await gw.call("deals", "add_loss_reason", p, body=body.model_dump())


# ---- deals --------------------------------------------------------------------------------------


@router.post("/deals", status_code=201, response_model=DealOut)
async def create_deal(body: DealIn, p: Auth, gw: GW) -> Any:
    """422 when `contact_id` or `owner_id` names no contact or active user of the tenant."""
    data = body.model_dump(exclude_unset=True)
    await gw.check_refs(p, data)
    return await gw.call("deals", "create_deal", p, body=data)


@router.post("/deals/import", status_code=201, response_model=ImportOut)
async def import_deals(body: ImportIn, p: Auth, gw: GW) -> Any:
    """Admin. Historical deals with their past stage dates (analytics on existing data): all are
    written or none (422 naming `deals.<i>.<field>`)."""
    return await gw.call("deals", "import_deals", p, body=body.model_dump(exclude_unset=True), timeout=60)


@router.get("/deals", response_model=DealPage)
async def list_deals(
    p: Auth,
    gw: GW,
    pipeline_id: str | None = None,
    stage_id: str | None = None,
    contact_id: str | None = None,
    owner_id: str | None = None,
    status: str | None = Query(default=None, pattern="^(open|won|lost)$"),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Newest first."""
    filters = {
        "pipeline_id": pipeline_id,
        "stage_id": stage_id,
        "contact_id": contact_id,
        "owner_id": owner_id,
        "status": status,
    }
    return await gw.call("deals", "list_deals", p, filters=filters, limit=limit, cursor=cursor)


@router.get("/deals/{deal_id}", response_model=DealOut)
async def get_deal(deal_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("deals", "get_deal", p, deal_id=deal_id)


@router.patch("/deals/{deal_id}", response_model=DealOut)
async def patch_deal(deal_id: str, body: DealPatch, p: Auth, gw: GW) -> Any:
    changes = body.model_dump(exclude_unset=True)
    await gw.check_refs(p, changes)
    return await gw.call("deals", "update_deal", p, deal_id=deal_id, changes=changes)


@router.post("/deals/{deal_id}/move", response_model=DealOut)
async def move_deal(deal_id: str, body: MoveIn, p: Auth, gw: GW) -> Any:
    """Any stage to any stage of the deal's pipeline (out of won/lost reopens it). A stage of
    another pipeline → 422 `stage_id`; to `lost` without a reason → 422 `lost_reason`."""
    return await gw.call("deals", "move_deal", p, deal_id=deal_id, body=body.model_dump(exclude_unset=True))
