"""Tasks, workload, automation rules and the calendar feed. Served by the tasks service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AwareDatetime

from gateway.deps import GW, Auth, Cursor, Limit
from gateway.identity import Principal
from services.common.access import require_writer
from services.tasks import api
from services.tasks.api import (
    CompleteIn,
    ReassignIn,
    RuleIn,
    RulePatch,
    TaskIn,
    TaskListStatus,
    TaskOut,
    TaskPage,
    TaskPatch,
)
from shared.errors import NotFound, Unauthorized, ValidationFailed

router = APIRouter(prefix="/api/v1", tags=["tasks"])

StatusQuery = Annotated[TaskListStatus | None, Query(description="`open` includes the overdue ones.")]
DueBeforeQuery = Annotated[AwareDatetime | None, Query(description="Due strictly before (ISO with offset).")]
TokenQuery = Annotated[str | None, Query(description="The user's feed token (`calendar_url` of /users/me).")]


# ---- tasks --------------------------------------------------------------------------------------


@router.post("/tasks", status_code=201, response_model=TaskOut)
async def create_task(body: TaskIn, p: Auth, gw: GW) -> Any:
    """A manager's task is its own unless `assignee_id` is left out (then it is the caller's).
    422 when `contact_id`, `deal_id` or `assignee_id` names no such record of the tenant."""
    await gw.check_refs(p, body.model_dump(mode="json", exclude_unset=True))
    return await gw.ask(api.CreateTask(body=body), p)


@router.get("/tasks", response_model=TaskPage)
async def list_tasks(
    p: Auth,
    gw: GW,
    assignee_id: str | None = None,
    contact_id: str | None = None,
    deal_id: str | None = None,
    status: StatusQuery = None,
    due_before: DueBeforeQuery = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Tasks by due time, earliest first."""
    filters = api.TaskFilters(
        assignee_id=assignee_id,
        contact_id=contact_id,
        deal_id=deal_id,
        status=status,
        due_before=due_before.isoformat() if isinstance(due_before, datetime) else None,
    )
    return await gw.ask(api.ListTasks(filters=filters, limit=limit, cursor=cursor), p)


@router.post("/tasks/reassign")
async def reassign_tasks(body: ReassignIn, p: Auth, gw: GW) -> Any:
    """Every open task of `from_user_id` (or just `task_ids`) goes to `to_user_id`, which must be
    an active user of the tenant (422 otherwise)."""
    require_writer(p.ctx())
    if not await gw.identity.active_user(p.tenant_id, body.to_user_id):
        raise ValidationFailed({"to_user_id": "is not an active user of this tenant"})
    return await gw.ask(api.ReassignTasks(body=body), p)


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def get_task(task_id: str, p: Auth, gw: GW) -> Any:
    return await gw.ask(api.GetTask(task_id=task_id), p)


@router.patch("/tasks/{task_id}", response_model=TaskOut)
async def patch_task(task_id: str, body: TaskPatch, p: Auth, gw: GW) -> Any:
    """Moving `due_at` (or `remind_before_s`) moves the reminder."""
    await gw.check_refs(p, body.model_dump(mode="json", exclude_unset=True))
    return await gw.ask(api.UpdateTask(task_id=task_id, changes=body), p)


@router.post("/tasks/{task_id}/complete", response_model=TaskOut)
async def complete_task(task_id: str, p: Auth, gw: GW, body: CompleteIn | None = None) -> Any:
    return await gw.ask(api.CompleteTask(task_id=task_id, body=body or CompleteIn()), p)


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut)
async def cancel_task(task_id: str, p: Auth, gw: GW) -> Any:
    return await gw.ask(api.CancelTask(task_id=task_id), p)


@router.get("/workload")
async def workload(p: Auth, gw: GW) -> Any:
    """Per user: `open` (overdue included), `overdue`, `due_today` (tenant time zone)."""
    return await gw.ask(api.Workload(), p)


# ---- automation rules ---------------------------------------------------------------------------


@router.get("/automation-rules", tags=["automation"])
async def list_rules(p: Auth, gw: GW) -> Any:
    """Built-in rules (`builtin: true`, switchable by id) then the tenant's own."""
    return await gw.ask(api.ListRules(), p)


@router.post("/automation-rules", status_code=201, tags=["automation"])
async def create_rule(body: RuleIn, p: Auth, gw: GW) -> Any:
    p.require("admin")
    # what was sent and is not null (``enabled`` defaults to true)
    sent = RuleIn.model_validate(body.model_dump(mode="json", exclude_none=True))
    return await gw.ask(api.CreateRule(body=sent), p)


@router.get("/automation-rules/{rule_id}", tags=["automation"])
async def get_rule(rule_id: str, p: Auth, gw: GW) -> Any:
    return await gw.ask(api.GetRule(rule_id=rule_id), p)


@router.patch("/automation-rules/{rule_id}", tags=["automation"])
async def patch_rule(rule_id: str, body: RulePatch, p: Auth, gw: GW) -> Any:
    p.require("admin")
    return await gw.ask(api.UpdateRule(rule_id=rule_id, changes=body), p)


@router.delete("/automation-rules/{rule_id}", status_code=204, tags=["automation"])
async def delete_rule(rule_id: str, p: Auth, gw: GW) -> None:
    p.require("admin")
    await gw.ask(api.DeleteRule(rule_id=rule_id), p)


# ---- calendar feed ------------------------------------------------------------------------------


@router.get(
    "/calendar.ics",
    response_class=Response,
    responses={
        200: {"content": {"text/calendar": {}}, "description": "iCalendar feed"},
        404: {"content": {"application/problem+json": {}}, "description": "No user has this feed token"},
    },
    tags=["tasks"],
)
async def calendar_feed(gw: GW, token: TokenQuery = None) -> Response:
    """The user's open tasks as an iCalendar feed for Google Calendar / Outlook. No API key: the
    `token` in the URL (`calendar_url` of `/users/me`) identifies the user."""
    if not token:
        raise Unauthorized("The calendar feed needs its ?token=.")
    user = await gw.identity.user_by_calendar_token(token)
    if user is None:
        raise NotFound("calendar")
    settings = await gw.identity.tenant_settings(user["tenant_id"])
    principal = Principal(user["tenant_id"], user["_id"], user["role"], user.get("name") or "", settings)
    out = await gw.ask(api.Calendar(), principal)
    return Response(
        content=out["ics"].encode("utf-8"),
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": 'inline; filename="tasks.ics"',
            "Cache-Control": "private, max-age=300",
        },
    )
