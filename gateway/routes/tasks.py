"""Tasks, workload, automation rules and the calendar feed. Served by the tasks service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth, Cursor, Limit
from gateway.identity import Principal
from services.common.access import require_writer
from shared.errors import NotFound, Unauthorized, ValidationFailed

router = APIRouter(prefix="/api/v1", tags=["tasks"])

TaskKind = Literal["call", "meeting", "email", "proposal", "other"]
StatusQuery = Annotated[
    Literal["open", "done", "canceled", "overdue"] | None,
    Query(description="`open` includes the overdue ones."),
]
DueBeforeQuery = Annotated[AwareDatetime | None, Query(description="Due strictly before (ISO with offset).")]
TokenQuery = Annotated[str | None, Query(description="The user's feed token (`calendar_url` of /users/me).")]


class TaskIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Перезвонить клиенту",
                    "kind": "call",
                    "due_at": "2026-11-27T15:00:00+03:00",
                    "contact_id": "01jdx0k3yv7c9e8r1q2w3e4r5t",
                    "remind_before_s": 900,
                }
            ]
        },
    )
    title: str = Field(min_length=1, max_length=500)
    kind: TaskKind
    due_at: AwareDatetime
    assignee_id: str | None = None
    contact_id: str | None = None
    deal_id: str | None = None
    remind_before_s: int | None = Field(default=None, ge=0, le=30 * 24 * 3600)


class TaskPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"due_at": "2026-11-28T11:00:00+03:00"}]}
    )
    title: str | None = Field(default=None, min_length=1, max_length=500)
    kind: TaskKind | None = None
    due_at: AwareDatetime | None = None
    assignee_id: str | None = None
    contact_id: str | None = None
    deal_id: str | None = None
    remind_before_s: int | None = Field(default=None, ge=0, le=30 * 24 * 3600)


class CompleteIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"result": "Договорились о встрече"}]}
    )
    result: str | None = Field(default=None, max_length=5000)


class ReassignIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"from_user_id": "01jdx0...", "to_user_id": "01jdx1..."}]},
    )
    from_user_id: str = Field(min_length=1)
    to_user_id: str = Field(min_length=1)
    task_ids: list[str] | None = Field(default=None, max_length=5000)


class TaskOut(BaseModel):
    id: str
    title: str
    kind: str
    status: Literal["open", "done", "canceled"]
    overdue: bool
    due_at: str
    assignee_id: str | None = None
    contact_id: str | None = None
    deal_id: str | None = None
    remind_before_s: int | None = None
    remind_at: str | None = None
    result: str | None = None
    created_at: str
    updated_at: str
    completed_at: str | None = None
    canceled_at: str | None = None
    created_by: str | None = None
    caused_by_rule: str | None = None
    reminder_sent_at: str | None = Field(default=None, description="When `task.reminder_due` went out.")
    overdue_sent_at: str | None = Field(default=None, description="When `task.overdue` went out.")


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None = None


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(description="Dotted path into the event payload, e.g. `data.status`.")
    op: Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists"]
    value: Any = None


RULE_EXAMPLE: dict[str, Any] = {
    "name": "Busy inbound calls → call back in 30 min",
    "event_type": "interaction.recorded",
    "conditions": [
        {"field": "kind", "op": "eq", "value": "call"},
        {"field": "direction", "op": "eq", "value": "in"},
        {"field": "data.status", "op": "eq", "value": "busy"},
    ],
    "actions": [
        {"type": "create_task", "title": "Call back", "kind": "call", "due_in_s": 1800, "assignee": "owner"}
    ],
}


class RuleIn(BaseModel):
    """Actions: `create_task` {title, kind, due_in_s, assignee: `owner` | `user:<id>` |
    `round_robin:<id>,<id>`, remind_before_s?}, `assign_owner` {user_id}, `move_deal` {stage_id},
    `webhook` {url, secret} (the secret is write-only and signs the deliveries like a subscription's;
    the rule answers `secret_set`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [RULE_EXAMPLE]})
    id: str | None = Field(default=None, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    event_type: str
    conditions: list[Condition] = Field(default_factory=list, max_length=50)
    actions: list[dict[str, Any]] = Field(min_length=1, max_length=20)


class RulePatch(BaseModel):
    """Built-in rules take `enabled` (and `stage_tasks` for `stage_tasks`: stage id → task
    templates); custom rules any field."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"enabled": False},
                {
                    "stage_tasks": {
                        "<stage id>": [{"title": "Send proposal", "kind": "proposal", "due_in_s": 86400}]
                    }
                },
            ]
        },
    )
    name: str | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
    event_type: str | None = None
    conditions: list[Condition] | None = Field(default=None, max_length=50)
    actions: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=20)
    stage_tasks: dict[str, list[dict[str, Any]]] | None = None


# ---- tasks --------------------------------------------------------------------------------------


@router.post("/tasks", status_code=201, response_model=TaskOut)
async def create_task(body: TaskIn, p: Auth, gw: GW) -> Any:
    """A manager's task is its own unless `assignee_id` is left out (then it is the caller's).
    422 when `contact_id`, `deal_id` or `assignee_id` names no such record of the tenant."""
    data = body.model_dump(mode="json", exclude_unset=True)
    await gw.check_refs(p, data)
    return await gw.call("tasks", "create_task", p, body=data)


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
    return await gw.call(
        "tasks",
        "list_tasks",
        p,
        filters={
            "assignee_id": assignee_id,
            "contact_id": contact_id,
            "deal_id": deal_id,
            "status": status,
            "due_before": due_before.isoformat() if isinstance(due_before, datetime) else None,
        },
        limit=limit,
        cursor=cursor,
    )


@router.post("/tasks/reassign")
async def reassign_tasks(body: ReassignIn, p: Auth, gw: GW) -> Any:
    """Every open task of `from_user_id` (or just `task_ids`) goes to `to_user_id`, which must be
    an active user of the tenant (422 otherwise)."""
    data = body.model_dump(exclude_unset=True)
    require_writer(p.ctx())
    if isinstance(data.get("to_user_id"), str) and not await gw.identity.active_user(
        p.tenant_id, data["to_user_id"]
    ):
        raise ValidationFailed({"to_user_id": "is not an active user of this tenant"})
    return await gw.call("tasks", "reassign_tasks", p, body=data)


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def get_task(task_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("tasks", "get_task", p, task_id=task_id)


@router.patch("/tasks/{task_id}", response_model=TaskOut)
async def patch_task(task_id: str, body: TaskPatch, p: Auth, gw: GW) -> Any:
    """Moving `due_at` (or `remind_before_s`) moves the reminder."""
    changes = body.model_dump(mode="json", exclude_unset=True)
    await gw.check_refs(p, changes)
    return await gw.call("tasks", "update_task", p, task_id=task_id, changes=changes)


@router.post("/tasks/{task_id}/complete", response_model=TaskOut)
async def complete_task(task_id: str, p: Auth, gw: GW, body: CompleteIn | None = None) -> Any:
    return await gw.call(
        "tasks", "complete_task", p, task_id=task_id, body=body.model_dump(exclude_unset=True) if body else {}
    )


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut)
async def cancel_task(task_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("tasks", "cancel_task", p, task_id=task_id)


@router.get("/workload")
async def workload(p: Auth, gw: GW) -> Any:
    """Per user: `open` (overdue included), `overdue`, `due_today` (tenant time zone)."""
    return await gw.call("tasks", "workload", p)


# ---- automation rules ---------------------------------------------------------------------------


@router.get("/automation-rules", tags=["automation"])
async def list_rules(p: Auth, gw: GW) -> Any:
    """Built-in rules (`builtin: true`, switchable by id) then the tenant's own."""
    return await gw.call("tasks", "list_rules", p)


@router.post("/automation-rules", status_code=201, tags=["automation"])
async def create_rule(body: RuleIn, p: Auth, gw: GW) -> Any:
    p.require("admin")
    return await gw.call("tasks", "create_rule", p, body=body.model_dump(mode="json", exclude_none=True))


@router.get("/automation-rules/{rule_id}", tags=["automation"])
async def get_rule(rule_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("tasks", "get_rule", p, rule_id=rule_id)


@router.patch("/automation-rules/{rule_id}", tags=["automation"])
async def patch_rule(rule_id: str, body: RulePatch, p: Auth, gw: GW) -> Any:
    p.require("admin")
    return await gw.call(
        "tasks", "update_rule", p, rule_id=rule_id, changes=body.model_dump(mode="json", exclude_unset=True)
    )


@router.delete("/automation-rules/{rule_id}", status_code=204, tags=["automation"])
async def delete_rule(rule_id: str, p: Auth, gw: GW) -> None:
    p.require("admin")
    await gw.call("tasks", "delete_rule", p, rule_id=rule_id)


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
    out = await gw.call("tasks", "calendar", principal)
    return Response(
        content=out["ics"].encode("utf-8"),
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": 'inline; filename="tasks.ics"',
            "Cache-Control": "private, max-age=300",
        },
    )
