"""Pure domain of the tasks service: tasks, their reminder schedule, workload, bulk reassignment.

No I/O here. Every state change is a function ``(state, command, now) -> (new state, events)``;
events are plain dicts ``{"event_type": ..., "payload": {...}}`` that the handlers wrap into the
shared envelope. Tasks serialise to and from MongoDB documents with :meth:`Task.to_doc` and
:meth:`Task.from_doc` (``_id`` is the task id; datetimes stay ``datetime`` objects, naive ones read
back from MongoDB are taken as UTC).

Scheduler fields kept on every task document:

* ``remind_at`` — ``due_at - remind_before_s`` (``None`` when the task has no reminder);
* ``reminder_sent_at`` — set once the ``task.reminder_due`` event went out;
* ``overdue_sent_at`` — set once the ``task.overdue`` event went out.

A scheduler replica claims work with one atomic update: filter :func:`reminder_claim_filter` /
:func:`overdue_claim_filter`, update :func:`reminder_claim_update` / :func:`overdue_claim_update`
(``find_one_and_update``), then builds the event with :func:`reminder_due_event` /
:func:`overdue_event`. A reschedule resets these fields (see :func:`next_reminder_fields`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Annotated, Any, Literal, TypeVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from shared.errors import AppError

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DomainError(AppError):
    """A business rule said no. ``status`` maps to the HTTP status, ``code`` is stable.

    A :class:`shared.errors.AppError`, so it crosses the RPC boundary as a problem+json answer."""

    status: int = 400
    code: str = "domain_error"
    title: str = "Request refused"

    def __init__(
        self,
        detail: str,
        errors: Mapping[str, str] | None = None,
        *,
        code: str | None = None,
    ) -> None:
        super().__init__(detail, errors=dict(errors or {}), code=code)
        self.errors: dict[str, str] = dict(errors or {})

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(status={self.status}, code={self.code!r}, detail={self.detail!r})"


class ValidationFailed(DomainError):
    """Input is well-formed JSON but breaks the contract; ``errors`` is field → message."""

    status = 422
    code = "validation_failed"
    title = "Validation failed"


class NotFound(DomainError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    code = "conflict"
    title = "Conflict"


def validation_errors(exc: ValidationError) -> dict[str, str]:
    """Turn a pydantic error into ``{"dotted.field": "message"}`` (first message per field)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if not _is_union_tag(p)]
        field = ".".join(loc) or "body"
        msg = str(err.get("msg", "invalid value"))
        errors.setdefault(field, msg.removeprefix("Value error, "))
    return errors


def _is_union_tag(part: object) -> bool:
    # pydantic puts the discriminator/function name into loc for tagged unions and validators
    return isinstance(part, str) and (part.startswith("function-") or part.endswith("]"))


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], data: Any) -> M:
    """Validate ``data`` against ``model`` raising :class:`ValidationFailed` with field errors."""
    if isinstance(data, model):
        return data
    if not isinstance(data, Mapping):
        raise ValidationFailed("Request body must be a JSON object", {"body": "must be an object"})
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ValidationFailed("Validation failed", validation_errors(exc)) from exc


# --------------------------------------------------------------------------------------------
# Types and commands
# --------------------------------------------------------------------------------------------

TaskKind = Literal["call", "meeting", "email", "proposal", "other"]
TaskStatus = Literal["open", "done", "canceled"]
TaskStatusFilter = Literal["open", "done", "canceled", "overdue"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
Event = dict[str, Any]

MAX_REMIND_BEFORE_S = 30 * 24 * 3600
DEFAULT_TZ = "Europe/Moscow"

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Ref = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Result = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]
RemindBefore = Annotated[int, Field(strict=True, ge=0, le=MAX_REMIND_BEFORE_S)]


class TaskCreate(BaseModel):
    """Body of ``POST /api/v1/tasks``. ``due_at`` must carry a UTC offset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Title
    kind: TaskKind
    due_at: AwareDatetime
    assignee_id: Ref | None = None
    contact_id: Ref | None = None
    deal_id: Ref | None = None
    remind_before_s: RemindBefore | None = None


class TaskPatch(BaseModel):
    """Body of ``PATCH /api/v1/tasks/{id}``; only the fields sent are changed (``null`` clears
    the optional ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Title | None = None
    kind: TaskKind | None = None
    due_at: AwareDatetime | None = None
    assignee_id: Ref | None = None
    contact_id: Ref | None = None
    deal_id: Ref | None = None
    remind_before_s: RemindBefore | None = None

    def changes(self) -> dict[str, Any]:
        """Fields explicitly sent, with their values."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class TaskComplete(BaseModel):
    """Body of ``POST /api/v1/tasks/{id}/complete``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    result: Result | None = None


class TaskReassign(BaseModel):
    """Body of ``POST /api/v1/tasks/reassign``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_user_id: Ref
    to_user_id: Ref
    task_ids: list[Ref] | None = Field(default=None, max_length=5000)


_REQUIRED_ON_PATCH = ("title", "kind", "due_at")


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """Aware UTC datetime; naive values (as pymongo returns them) are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _utc_opt(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat()


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """One task. Immutable: every change returns a new instance (``dataclasses.replace``)."""

    id: str
    tenant_id: str
    title: str
    kind: TaskKind
    due_at: datetime
    created_at: datetime
    updated_at: datetime
    status: TaskStatus = "open"
    assignee_id: str | None = None
    contact_id: str | None = None
    deal_id: str | None = None
    remind_before_s: int | None = None
    result: str | None = None
    completed_at: datetime | None = None
    canceled_at: datetime | None = None
    created_by: str | None = None
    caused_by_rule: str | None = None
    rule_chain: tuple[str, ...] = ()
    remind_at: datetime | None = None
    reminder_sent_at: datetime | None = None
    overdue_sent_at: datetime | None = None
    version: int = 1

    # ---- derived ---------------------------------------------------------------------------

    def is_overdue(self, now: datetime) -> bool:
        """Open and past its due time."""
        return self.status == "open" and _utc(self.due_at) < _utc(now)

    # ---- (de)serialisation -----------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        """MongoDB document (``_id`` = task id); datetimes as aware UTC ``datetime``."""
        doc: dict[str, Any] = {"_id": self.id}
        for f in dataclasses.fields(self):
            if f.name == "id":
                continue
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = _utc(value)
            elif isinstance(value, tuple):
                value = list(value)
            doc[f.name] = value
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Task:
        """Inverse of :meth:`to_doc`; unknown keys are ignored, missing optional ones defaulted."""
        names = {f.name for f in dataclasses.fields(cls)}
        data: dict[str, Any] = {k: v for k, v in doc.items() if k in names}
        data["id"] = str(doc["_id"] if "_id" in doc else doc["id"])
        for key, value in list(data.items()):
            if isinstance(value, datetime):
                data[key] = _utc(value)
        data["rule_chain"] = tuple(data.get("rule_chain") or ())
        return cls(**data)

    def to_view(self, now: datetime) -> dict[str, Any]:
        """The public API representation (ISO strings, derived ``overdue``)."""
        return {
            "id": self.id,
            "title": self.title,
            "kind": self.kind,
            "status": self.status,
            "overdue": self.is_overdue(now),
            "due_at": _iso(self.due_at),
            "assignee_id": self.assignee_id,
            "contact_id": self.contact_id,
            "deal_id": self.deal_id,
            "remind_before_s": self.remind_before_s,
            "remind_at": _iso(self.remind_at),
            "result": self.result,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "completed_at": _iso(self.completed_at),
            "canceled_at": _iso(self.canceled_at),
            "created_by": self.created_by,
            "caused_by_rule": self.caused_by_rule,
        }


def is_overdue(task: Task, now: datetime) -> bool:
    return task.is_overdue(now)


# --------------------------------------------------------------------------------------------
# Reminder schedule
# --------------------------------------------------------------------------------------------


def compute_remind_at(due_at: datetime, remind_before_s: int | None) -> datetime | None:
    """``due_at - remind_before_s``; ``None`` when no reminder is wanted."""
    if remind_before_s is None:
        return None
    return _utc(due_at) - timedelta(seconds=remind_before_s)


def next_reminder_fields(task: Task) -> dict[str, Any]:
    """The scheduler fields for the task's current ``due_at``/``remind_before_s`` with both
    ``*_sent_at`` cleared: exactly what to ``$set`` after a reschedule so the new times fire."""
    return {
        "remind_at": compute_remind_at(task.due_at, task.remind_before_s),
        "reminder_sent_at": None,
        "overdue_sent_at": None,
    }


def reminder_claim_filter(now: datetime) -> dict[str, Any]:
    """Mongo filter of open tasks whose reminder is due now and not yet sent.

    A reminder whose task is already past due is not sent (``task.overdue`` covers it).
    Combine with ``tenant_id`` when scanning per tenant."""
    n = _utc(now)
    return {
        "status": "open",
        "remind_at": {"$ne": None, "$lte": n},
        "reminder_sent_at": None,
        "due_at": {"$gt": n},
    }


def reminder_claim_update(now: datetime) -> dict[str, Any]:
    return {"$set": {"reminder_sent_at": _utc(now)}, "$inc": {"version": 1}}


def overdue_claim_filter(now: datetime) -> dict[str, Any]:
    """Mongo filter of open tasks past due whose ``task.overdue`` has not been sent."""
    return {"status": "open", "due_at": {"$lt": _utc(now)}, "overdue_sent_at": None}


def overdue_claim_update(now: datetime) -> dict[str, Any]:
    return {"$set": {"overdue_sent_at": _utc(now)}, "$inc": {"version": 1}}


def reminder_is_due(task: Task, now: datetime) -> bool:
    """Same predicate as :func:`reminder_claim_filter`, in Python."""
    n = _utc(now)
    return (
        task.status == "open"
        and task.remind_at is not None
        and task.reminder_sent_at is None
        and _utc(task.remind_at) <= n
        and _utc(task.due_at) > n
    )


def overdue_is_due(task: Task, now: datetime) -> bool:
    """Same predicate as :func:`overdue_claim_filter`, in Python."""
    return task.overdue_sent_at is None and task.is_overdue(now)


def mark_reminder_sent(task: Task, now: datetime) -> tuple[Task, list[Event]]:
    """Claim the reminder in memory (for fakes/tests): returns the task and ``task.reminder_due``,
    or the task unchanged and no events when nothing is due."""
    if not reminder_is_due(task, now):
        return task, []
    new = dataclasses.replace(task, reminder_sent_at=_utc(now), version=task.version + 1)
    return new, [reminder_due_event(new)]


def mark_overdue_sent(task: Task, now: datetime) -> tuple[Task, list[Event]]:
    """Claim the overdue notice in memory: the task and ``task.overdue``, or nothing."""
    if not overdue_is_due(task, now):
        return task, []
    new = dataclasses.replace(task, overdue_sent_at=_utc(now), version=task.version + 1)
    return new, [overdue_event(new)]


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


def task_payload(task: Task) -> dict[str, Any]:
    """The common payload of every ``task.*`` event."""
    payload: dict[str, Any] = {
        "task_id": task.id,
        "assignee_id": task.assignee_id,
        "contact_id": task.contact_id,
        "deal_id": task.deal_id,
        "due_at": _iso(task.due_at),
        "kind": task.kind,
        "title": task.title,
        "status": task.status,
    }
    return payload


def _event(event_type: str, task: Task, **extra: Any) -> Event:
    payload = task_payload(task)
    payload.update(extra)
    return {"event_type": event_type, "payload": payload}


def reminder_due_event(task: Task) -> Event:
    return _event(
        "task.reminder_due",
        task,
        remind_at=_iso(task.remind_at),
        remind_before_s=task.remind_before_s,
    )


def overdue_event(task: Task) -> Event:
    return _event("task.overdue", task)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def create_task(
    data: TaskCreate | Mapping[str, Any],
    *,
    task_id: str,
    tenant_id: str,
    now: datetime,
    created_by: str | None = None,
    caused_by_rule: str | None = None,
    rule_chain: Sequence[str] = (),
) -> tuple[Task, list[Event]]:
    """Validate and create an open task; emits ``task.created``.

    ``caused_by_rule``/``rule_chain`` mark tasks made by automation rules (they travel in the
    event payload so the rules engine can stop loops)."""
    cmd = parse_model(TaskCreate, data)
    n = _utc(now)
    chain = tuple(rule_chain)
    if caused_by_rule and caused_by_rule not in chain:
        chain = (*chain, caused_by_rule)
    task = Task(
        id=task_id,
        tenant_id=tenant_id,
        title=cmd.title,
        kind=cmd.kind,
        due_at=_utc(cmd.due_at),
        assignee_id=cmd.assignee_id,
        contact_id=cmd.contact_id,
        deal_id=cmd.deal_id,
        remind_before_s=cmd.remind_before_s,
        created_at=n,
        updated_at=n,
        created_by=created_by,
        caused_by_rule=caused_by_rule,
        rule_chain=chain,
        remind_at=compute_remind_at(cmd.due_at, cmd.remind_before_s),
    )
    extra: dict[str, Any] = {"remind_before_s": task.remind_before_s}
    if caused_by_rule:
        extra["caused_by_rule"] = caused_by_rule
        extra["rule_chain"] = list(chain)
    return task, [_event("task.created", task, **extra)]


def _require_open(task: Task, action: str) -> None:
    if task.status != "open":
        raise Conflict(
            f"Cannot {action} a task that is {task.status}",
            {"status": f"task is {task.status}"},
            code="task_not_open",
        )


def update_task(task: Task, data: TaskPatch | Mapping[str, Any], now: datetime) -> tuple[Task, list[Event]]:
    """Apply a PATCH. Only open tasks change (else :class:`Conflict`).

    Emits ``task.updated`` (payload ``changes``: the field names that changed) and, when the
    assignee changed, ``task.reassigned`` (``previous_assignee_id``). Changing ``due_at`` or
    ``remind_before_s`` moves ``remind_at`` and re-arms the reminder/overdue notices.
    Nothing changed → the same task and no events."""
    patch = parse_model(TaskPatch, data)
    changes = patch.changes()
    errors = {f: "must not be null" for f in _REQUIRED_ON_PATCH if f in changes and changes[f] is None}
    if errors:
        raise ValidationFailed("Validation failed", errors)
    _require_open(task, "change")
    if "due_at" in changes:
        changes["due_at"] = _utc(changes["due_at"])
    changed = sorted(k for k, v in changes.items() if getattr(task, k) != v)
    if not changed:
        return task, []
    n = _utc(now)
    new = dataclasses.replace(
        task,
        **{k: changes[k] for k in changed},
        updated_at=n,
        version=task.version + 1,
    )
    if "due_at" in changed or "remind_before_s" in changed:
        fields = next_reminder_fields(new)
        if "due_at" not in changed:
            # only the reminder moved: an overdue notice already sent stays sent
            fields.pop("overdue_sent_at")
        new = dataclasses.replace(new, **fields)
    events = [_event("task.updated", new, changes=changed, remind_before_s=new.remind_before_s)]
    if "assignee_id" in changed:
        events.append(_event("task.reassigned", new, previous_assignee_id=task.assignee_id))
    return new, events


def complete_task(
    task: Task, data: TaskComplete | Mapping[str, Any] | None, now: datetime
) -> tuple[Task, list[Event]]:
    """Mark done; emits ``task.completed`` (with ``result``). Completing a done task again is a
    no-op (at-least-once safe); a canceled one → :class:`Conflict`."""
    cmd = parse_model(TaskComplete, data if data is not None else {})
    if task.status == "done":
        return task, []
    _require_open(task, "complete")
    n = _utc(now)
    new = dataclasses.replace(
        task,
        status="done",
        result=cmd.result or None,
        completed_at=n,
        updated_at=n,
        version=task.version + 1,
    )
    return new, [_event("task.completed", new, result=new.result, completed_at=_iso(n))]


def cancel_task(task: Task, now: datetime) -> tuple[Task, list[Event]]:
    """Cancel an open task; emits ``task.canceled``. Canceling twice is a no-op; a done task →
    :class:`Conflict`."""
    if task.status == "canceled":
        return task, []
    _require_open(task, "cancel")
    n = _utc(now)
    new = dataclasses.replace(task, status="canceled", canceled_at=n, updated_at=n, version=task.version + 1)
    return new, [_event("task.canceled", new, canceled_at=_iso(n))]


def reassign_task(task: Task, to_user_id: str | None, now: datetime) -> tuple[Task, list[Event]]:
    """Give an open task to another user (``None`` = unassigned)."""
    return update_task(task, {"assignee_id": to_user_id}, now)


def bulk_reassign(
    tasks: Iterable[Task],
    data: TaskReassign | Mapping[str, Any],
    now: datetime,
) -> tuple[list[Task], list[Event]]:
    """``POST /tasks/reassign``: every open task of ``from_user_id`` (restricted to ``task_ids``
    when given) goes to ``to_user_id``. Returns only the changed tasks and their events
    (``task.updated`` + ``task.reassigned`` each). Done/canceled tasks and tasks of other users
    are left alone. ``from_user_id == to_user_id`` → :class:`ValidationFailed`."""
    cmd = parse_model(TaskReassign, data)
    if cmd.from_user_id == cmd.to_user_id:
        raise ValidationFailed("Validation failed", {"to_user_id": "must differ from from_user_id"})
    wanted = set(cmd.task_ids) if cmd.task_ids is not None else None
    changed: list[Task] = []
    events: list[Event] = []
    for task in tasks:
        if task.status != "open" or task.assignee_id != cmd.from_user_id:
            continue
        if wanted is not None and task.id not in wanted:
            continue
        new, evs = reassign_task(task, cmd.to_user_id, now)
        changed.append(new)
        events.extend(evs)
    return changed, events


def bulk_reassign_filter(data: TaskReassign | Mapping[str, Any]) -> dict[str, Any]:
    """Mongo filter selecting the tasks :func:`bulk_reassign` may change (add ``tenant_id``)."""
    cmd = parse_model(TaskReassign, data)
    query: dict[str, Any] = {"status": "open", "assignee_id": cmd.from_user_id}
    if cmd.task_ids is not None:
        query["_id"] = {"$in": list(cmd.task_ids)}
    return query


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


def status_filter(status: TaskStatusFilter | str, now: datetime) -> dict[str, Any]:
    """Mongo filter for ``?status=``: ``open`` includes the overdue ones; ``overdue`` = open and
    ``due_at < now``."""
    if status == "overdue":
        return {"status": "open", "due_at": {"$lt": _utc(now)}}
    if status in ("open", "done", "canceled"):
        return {"status": status}
    raise ValidationFailed("Validation failed", {"status": "must be one of open, done, canceled, overdue"})


def matches_status(task: Task, status: TaskStatusFilter | str, now: datetime) -> bool:
    """In-memory twin of :func:`status_filter`."""
    if status == "overdue":
        return task.is_overdue(now)
    status_filter(status, now)  # validates
    return task.status == status


def resolve_timezone(tz: str | tzinfo | None) -> tzinfo:
    """``tzinfo`` from an IANA name (default Europe/Moscow); an unknown name →
    :class:`ValidationFailed`."""
    if tz is None or tz == "":
        return ZoneInfo(DEFAULT_TZ)
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed("Unknown time zone", {"timezone": "unknown time zone"}) from exc


def local_day(moment: datetime, tz: str | tzinfo | None = None) -> date:
    """The calendar day of ``moment`` in ``tz``."""
    return _utc(moment).astimezone(resolve_timezone(tz)).date()


def workload(
    tasks: Iterable[Task],
    users: Iterable[str | Mapping[str, Any]],
    now: datetime,
    tz: str | tzinfo | None = DEFAULT_TZ,
) -> list[dict[str, Any]]:
    """Per user: ``{"user_id", "open", "overdue", "due_today"}``.

    ``open`` counts every open task (overdue included), ``overdue`` open ones past due,
    ``due_today`` open ones due on today's date in the tenant time zone (whether already past
    or not). Every user listed appears (zeros included), in the given order; assignees not in
    ``users`` are appended sorted by id; unassigned tasks are not counted.
    ``users`` are ids or dicts with ``user_id``/``id``/``_id``."""
    zone = resolve_timezone(tz)
    today = local_day(now, zone)
    rows: dict[str, dict[str, Any]] = {}
    for user in users:
        uid = _user_id(user)
        rows.setdefault(uid, {"user_id": uid, "open": 0, "overdue": 0, "due_today": 0})
    extra: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if task.status != "open" or task.assignee_id is None:
            continue
        row = rows.get(task.assignee_id)
        if row is None:
            row = extra.setdefault(
                task.assignee_id,
                {"user_id": task.assignee_id, "open": 0, "overdue": 0, "due_today": 0},
            )
        row["open"] += 1
        if task.is_overdue(now):
            row["overdue"] += 1
        if local_day(task.due_at, zone) == today:
            row["due_today"] += 1
    return [*rows.values(), *(extra[k] for k in sorted(extra))]


def _user_id(user: str | Mapping[str, Any]) -> str:
    if isinstance(user, str):
        return user
    for key in ("user_id", "id", "_id"):
        if user.get(key) is not None:
            return str(user[key])
    raise ValueError("user without an id")


__all__ = [
    "DEFAULT_TZ",
    "TASK_KINDS",
    "Conflict",
    "DomainError",
    "Event",
    "NotFound",
    "Task",
    "TaskComplete",
    "TaskCreate",
    "TaskKind",
    "TaskPatch",
    "TaskReassign",
    "TaskStatus",
    "ValidationFailed",
    "bulk_reassign",
    "bulk_reassign_filter",
    "cancel_task",
    "complete_task",
    "compute_remind_at",
    "create_task",
    "is_overdue",
    "local_day",
    "mark_overdue_sent",
    "mark_reminder_sent",
    "matches_status",
    "next_reminder_fields",
    "overdue_claim_filter",
    "overdue_claim_update",
    "overdue_event",
    "overdue_is_due",
    "parse_model",
    "reassign_task",
    "reminder_claim_filter",
    "reminder_claim_update",
    "reminder_due_event",
    "reminder_is_due",
    "resolve_timezone",
    "status_filter",
    "task_payload",
    "update_task",
    "validation_errors",
    "workload",
]
