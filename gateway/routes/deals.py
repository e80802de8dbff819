"""Pipelines, loss reasons and deals. Served by the deals service.

The bodies and answers are the deals service's contract (:mod:`services.deals.api`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from gateway.deps import GW, Auth, Cursor, Limit
from gateway.lookup import pick
from services.deals import api
from services.deals.api import (
    DealIn,
    DealOut,
    DealPage,
    DealPatch,
    DealStatus,
    ImportIn,
    ImportOut,
    LossReason,
    LossReasonIn,
    LossReasonPage,
    MoveIn,
    PipelineIn,
    PipelineOut,
    PipelinePage,
    PipelinePatch,
)

router = APIRouter(prefix="/api/v1", tags=["deals"])

# ---- pipelines ----------------------------------------------------------------------------------


@router.post("/pipelines", status_code=201, response_model=PipelineOut)
async def create_pipeline(body: PipelineIn, p: Auth, gw: GW) -> Any:
    """Admin. The stages given are the open ones in order; a `won` (100) and a `lost` (0) stage are
    added. The tenant's first pipeline becomes its default one."""
    return await gw.ask(api.CreatePipeline(body=body), p)


@router.get("/pipelines", response_model=PipelinePage)
async def list_pipelines(p: Auth, gw: GW) -> Any:
    return await gw.ask(api.ListPipelines(), p)


@router.get("/pipelines/{pipeline_id}", response_model=PipelineOut)
async def get_pipeline(pipeline_id: str, p: Auth, gw: GW) -> Any:
    return await gw.ask(api.GetPipeline(pipeline_id=pipeline_id), p)


@router.patch("/pipelines/{pipeline_id}", response_model=PipelineOut)
async def patch_pipeline(pipeline_id: str, body: PipelinePatch, p: Auth, gw: GW) -> Any:
    """Admin. Rename, make default, re-order, re-weight, add and delete stages."""
    return await gw.ask(api.UpdatePipeline(pipeline_id=pipeline_id, changes=body), p)


@router.delete("/pipelines/{pipeline_id}", status_code=204)
async def delete_pipeline(pipeline_id: str, p: Auth, gw: GW) -> Response:
    """Admin. Only a pipeline without deals (open, won or lost) can go: 409 `pipeline_has_deals`
    otherwise. Deleting the default pipeline makes the oldest remaining one the default."""
    await gw.ask(api.DeletePipeline(pipeline_id=pipeline_id), p)
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
    return await gw.ask(api.DeleteStage(pipeline_id=pipeline_id, stage_id=stage_id, move_to=move_to), p)


# ---- loss reasons -------------------------------------------------------------------------------


@router.get("/loss-reasons", response_model=LossReasonPage)
async def list_loss_reasons(p: Auth, gw: GW) -> Any:
    """The tenant's list; while it is empty any non-empty text is accepted as a reason."""
    return await gw.ask(api.ListLossReasons(), p)


@router.get("/loss-reasons/{name}", response_model=LossReason)
async def get_loss_reason(name: str, p: Auth, gw: GW) -> Any:
    """One reason of the list (reasons are identified by their text)."""
    return pick(await gw.ask(api.ListLossReasons(), p), name, "loss reason", "name")


@router.post("/loss-reasons", status_code=201, response_model=LossReason)
async def add_loss_reason(body: LossReasonIn, p: Auth, gw: GW) -> Any:
    """Admin. 409 when the reason exists (in any letter case)."""
    return await gw.ask(api.AddLossReason(body=body), p)


# ---- deals --------------------------------------------------------------------------------------


@router.post("/deals", status_code=201, response_model=DealOut)
async def create_deal(body: DealIn, p: Auth, gw: GW) -> Any:
    """422 when `contact_id` or `owner_id` names no contact or active user of the tenant."""
    await gw.check_refs(p, body.model_dump(exclude_unset=True))
    return await gw.ask(api.CreateDeal(body=body), p)


@router.post("/deals/import", status_code=201, response_model=ImportOut)
async def import_deals(body: ImportIn, p: Auth, gw: GW) -> Any:
    """Admin. Historical deals with their past stage dates (analytics on existing data): all are
    written or none (422 naming `deals.<i>.<field>`)."""
    return await gw.ask(api.ImportDeals(body=body), p, timeout=60)


@router.get("/deals", response_model=DealPage)
async def list_deals(
    p: Auth,
    gw: GW,
    pipeline_id: str | None = None,
    stage_id: str | None = None,
    contact_id: str | None = None,
    owner_id: str | None = None,
    status: DealStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Newest first."""
    filters = api.DealFilters(
        pipeline_id=pipeline_id, stage_id=stage_id, contact_id=contact_id, owner_id=owner_id, status=status
    )
    return await gw.ask(api.ListDeals(filters=filters, limit=limit, cursor=cursor), p)


@router.get("/deals/{deal_id}", response_model=DealOut)
async def get_deal(deal_id: str, p: Auth, gw: GW) -> Any:
    return await gw.ask(api.GetDeal(deal_id=deal_id), p)


@router.patch("/deals/{deal_id}", response_model=DealOut)
async def patch_deal(deal_id: str, body: DealPatch, p: Auth, gw: GW) -> Any:
    await gw.check_refs(p, body.model_dump(exclude_unset=True))
    return await gw.ask(api.UpdateDeal(deal_id=deal_id, changes=body), p)


@router.post("/deals/{deal_id}/move", response_model=DealOut)
async def move_deal(deal_id: str, body: MoveIn, p: Auth, gw: GW) -> Any:
    """Any stage to any stage of the deal's pipeline (out of won/lost reopens it). A stage of
    another pipeline → 422 `stage_id`; to `lost` without a reason → 422 `lost_reason`."""
    return await gw.ask(api.MoveDeal(deal_id=deal_id, body=body), p)
