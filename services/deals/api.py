"""The deals service's typed RPC contract: one request model per method, the bodies and answers
the gateway shows (its ``response_model``), so a shape is written once, here.

Money is ``amount`` as a decimal string (``"1999.99"``; a request may send a number) with an ISO 4217
``currency``; probabilities are integer percent. The business rules (stage ids, amounts, reasons)
are checked by the service, whose 422s name each offending field.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contract import RpcRequest

SERVICE = "deals"
DealStatus = Literal["open", "won", "lost"]

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


class Request(RpcRequest):
    """One RPC call on the deals service."""

    SERVICE: ClassVar[str] = SERVICE


class ListPipelines(Request):
    METHOD = "list_pipelines"


class GetPipeline(Request):
    METHOD = "get_pipeline"
    pipeline_id: str


class CreatePipeline(Request):
    METHOD = "create_pipeline"
    body: PipelineIn


class UpdatePipeline(Request):
    METHOD = "update_pipeline"
    pipeline_id: str
    changes: PipelinePatch


class DeleteStage(Request):
    METHOD = "delete_stage"
    pipeline_id: str
    stage_id: str
    move_to: str | None = None


class DeletePipeline(Request):
    METHOD = "delete_pipeline"
    pipeline_id: str


class ListLossReasons(Request):
    METHOD = "list_loss_reasons"


class AddLossReason(Request):
    METHOD = "add_loss_reason"
    body: LossReasonIn


class DealFilters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pipeline_id: str | None = None
    stage_id: str | None = None
    contact_id: str | None = None
    owner_id: str | None = None
    status: DealStatus | None = None


class ListDeals(Request):
    """Newest first."""

    METHOD = "list_deals"
    filters: DealFilters = Field(default_factory=DealFilters)
    limit: int | None = None
    cursor: str | None = None


class GetDeal(Request):
    METHOD = "get_deal"
    deal_id: str


class CreateDeal(Request):
    METHOD = "create_deal"
    body: DealIn


class UpdateDeal(Request):
    METHOD = "update_deal"
    deal_id: str
    changes: DealPatch


class MoveDeal(Request):
    METHOD = "move_deal"
    deal_id: str
    body: MoveIn


class ImportDeals(Request):
    METHOD = "import_deals"
    body: ImportIn


class AcceptInboxItem(Request):
    """The deal an accepted inbox item opens, asked for directly (the ``inbox.item_accepted``
    event does the same)."""

    METHOD = "accept_inbox_item"
    item_id: str
    contact_id: str
    pipeline_id: str | None = None
    owner_id: str | None = None
    title: str = "New lead"


class ExportContact(Request):
    """The GDPR export: the deals of a contact."""

    METHOD = "export_contact"
    contact_id: str
