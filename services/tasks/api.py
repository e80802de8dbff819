"""The tasks service's typed RPC contract: one request model per method, the bodies and answers
the gateway shows, so a shape or an enum is written once, here."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contract import RpcRequest

SERVICE = "tasks"
TaskKind = Literal["call", "meeting", "email", "proposal", "other"]
TaskStatus = Literal["open", "done", "canceled"]
TaskListStatus = Literal["open", "done", "canceled", "overdue"]
"""A listing's status filter: ``open`` includes the overdue ones."""


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
    status: TaskStatus
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


class Request(RpcRequest):
    """One RPC call on the tasks service."""

    SERVICE: ClassVar[str] = SERVICE


class CreateTask(Request):
    METHOD = "create_task"
    body: TaskIn


class TaskFilters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    assignee_id: str | None = None
    contact_id: str | None = None
    deal_id: str | None = None
    status: TaskListStatus | None = None
    due_before: str | None = None
    """ISO 8601 with offset: due strictly before."""


class ListTasks(Request):
    """By due time, earliest first."""

    METHOD = "list_tasks"
    filters: TaskFilters = Field(default_factory=TaskFilters)
    limit: int | None = None
    cursor: str | None = None


class GetTask(Request):
    METHOD = "get_task"
    task_id: str


class UpdateTask(Request):
    METHOD = "update_task"
    task_id: str
    changes: TaskPatch


class CompleteTask(Request):
    METHOD = "complete_task"
    task_id: str
    body: CompleteIn = Field(default_factory=CompleteIn)


class CancelTask(Request):
    METHOD = "cancel_task"
    task_id: str


class ReassignTasks(Request):
    METHOD = "reassign_tasks"
    body: ReassignIn


class Workload(Request):
    METHOD = "workload"


class Calendar(Request):
    """The caller's open tasks as iCalendar text (``{"ics"}``)."""

    METHOD = "calendar"


class ExportContact(Request):
    """The GDPR export: the tasks of a contact."""

    METHOD = "export_contact"
    contact_id: str


class ListRules(Request):
    METHOD = "list_rules"


class GetRule(Request):
    METHOD = "get_rule"
    rule_id: str


class CreateRule(Request):
    METHOD = "create_rule"
    body: RuleIn


class UpdateRule(Request):
    METHOD = "update_rule"
    rule_id: str
    changes: RulePatch


class DeleteRule(Request):
    METHOD = "delete_rule"
    rule_id: str
