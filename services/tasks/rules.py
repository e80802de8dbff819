"""Automation rules ("Digital Pipeline"): pure evaluation of tenant rules against one event.

A rule::

    {"id", "name", "enabled", "event_type",
     "conditions": [{"field": "data.status", "op": "eq", "value": "missed"}, ...],
     "actions": [{"type": "create_task", "title", "kind", "due_in_s", "assignee"},
                 {"type": "assign_owner", "user_id"},
                 {"type": "move_deal", "stage_id"},
                 {"type": "webhook", "url"},
                 {"type": "stage_tasks"}]}

``field`` is a dotted path into the event payload (``data.status``, ``source.kind``,
``items.0.id``). All conditions must hold (AND). ``assignee`` of ``create_task`` is ``"owner"``,
``"user:<id>"`` or ``"round_robin:<id>,<id>,..."`` (``"round_robin:[a, b]"`` is accepted too).
``stage_tasks`` expands to the tasks configured for the stage a deal entered
(:attr:`RuleContext.stage_tasks`).

:func:`evaluate` returns concrete :class:`Action` objects: assignees resolved, due times computed,
each with an ``idempotency_key`` (same event twice → same key) and the causal chain to stamp on the
events the action produces (``caused_by_rule``, ``rule_chain``, ``caused_by_subject`` in the
payload). Loop protection: an event caused by rule R about subject S never triggers R again.

Built-in rules (:func:`default_rules`) can be switched off per tenant by id
(:func:`effective_rules`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from services.tasks.domain import (
    Event,
    Task,
    TaskKind,
    ValidationFailed,
    _utc,
    create_task,
    parse_model,
)

# --------------------------------------------------------------------------------------------
# Rule model and validation
# --------------------------------------------------------------------------------------------

Op = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists"]
OPS: tuple[str, ...] = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists")

MAX_DUE_IN_S = 365 * 24 * 3600
STAGE_TASK_DUE_IN_S = 86400
"""Default ``due_in_s`` of a stage task template (one day)."""
MAX_RULE_CHAIN = 8
"""Events further than this many rule hops from a human/provider action trigger nothing."""

RULE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
FIELD_RE = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Ref = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]

OWNER = "owner"
USER_PREFIX = "user:"
ROUND_ROBIN_PREFIX = "round_robin:"


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    op: Op
    value: Any = None

    @field_validator("field")
    @classmethod
    def _field_path(cls, v: str) -> str:
        if not FIELD_RE.match(v):
            raise ValueError("must be a dotted path such as data.status")
        return v

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        v = self.value
        if self.op in ("in", "not_in"):
            if not isinstance(v, list):
                raise ValueError(f"value must be a list for {self.op}")
        elif self.op in ("gt", "gte", "lt", "lte"):
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                raise ValueError(f"value must be a number or a string for {self.op}")
        elif self.op == "exists":
            if v is not None and not isinstance(v, bool):
                raise ValueError("value must be true or false for exists")
        elif self.op == "contains":
            if v is None or isinstance(v, dict | list):
                raise ValueError("value must be a scalar for contains")
        elif isinstance(v, dict):
            raise ValueError("value must not be an object")
        return self


class CreateTaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["create_task"]
    title: Title
    kind: TaskKind = "other"
    due_in_s: int = Field(default=3600, strict=True, ge=0, le=MAX_DUE_IN_S)
    assignee: str = OWNER
    remind_before_s: int | None = Field(default=None, strict=True, ge=0, le=30 * 24 * 3600)

    @field_validator("assignee")
    @classmethod
    def _assignee(cls, v: str) -> str:
        parse_assignee(v)
        return v


class AssignOwnerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["assign_owner"]
    user_id: Ref


class MoveDealSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["move_deal"]
    stage_id: Ref


SEALED = "sealed:"


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"]
    url: str
    secret: str | None = None
    """Write-only: signs the deliveries like a subscription's. Stored sealed (``SEALED`` prefix)."""

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        if v is None or (v.startswith(SEALED) and len(v) <= 4000):
            return v
        if not 8 <= len(v) <= 200:
            raise ValueError("must be 8-200 characters")
        return v

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        return v.strip()


class StageTasksSpec(BaseModel):
    """Expands to the tasks configured for the stage a deal entered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["stage_tasks"]


ActionSpec = Annotated[
    CreateTaskSpec | AssignOwnerSpec | MoveDealSpec | WebhookSpec | StageTasksSpec,
    Field(discriminator="type"),
]


class Rule(BaseModel):
    """A validated rule. ``Rule.model_dump()`` is its MongoDB document (plus ``tenant_id``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: Name
    enabled: bool = True
    event_type: str
    conditions: list[Condition] = Field(default_factory=list, max_length=50)
    actions: list[ActionSpec] = Field(min_length=1, max_length=20)
    builtin: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not RULE_ID_RE.match(v):
            raise ValueError("must be 1-100 letters, digits or _.:-")
        return v

    @field_validator("event_type")
    @classmethod
    def _event_type(cls, v: str) -> str:
        if not EVENT_TYPE_RE.match(v):
            raise ValueError("must look like aggregate.verb, e.g. deal.stage_changed")
        return v

    def to_doc(self) -> dict[str, Any]:
        doc = self.model_dump(mode="json")
        doc["_id"] = doc.pop("id")
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Rule:
        data = {k: v for k, v in doc.items() if k not in ("_id", "tenant_id")}
        data["id"] = str(doc["_id"] if "_id" in doc else doc["id"])
        return cls.model_validate(data)


def parse_rule(data: Mapping[str, Any], *, rule_id: str | None = None) -> Rule:
    """Validate a rule from an API body; ``rule_id`` (when given) overrides ``data["id"]``.
    Errors → :class:`ValidationFailed` with ``{"conditions.0.value": "...", ...}``.
    A custom rule may not take the id of a built-in one, nor claim to be built in."""
    if not isinstance(data, Mapping):
        raise ValidationFailed("Request body must be a JSON object", {"body": "must be an object"})
    body = dict(data)
    if rule_id is not None:
        body["id"] = rule_id
    errors: dict[str, str] = {}
    if body.get("id") in BUILTIN_RULE_IDS:
        errors["id"] = "is reserved for a built-in rule"
    if body.get("builtin"):
        errors["builtin"] = "custom rules cannot be built in"
    try:
        rule = parse_model(Rule, body)
    except ValidationFailed as exc:
        exc.errors = {**_tidy_rule_errors(exc.errors), **errors}
        raise
    if errors:
        raise ValidationFailed("Validation failed", errors)
    return rule


_ACTION_TAG_RE = re.compile(
    r"^(actions\.\d+)\.(?:create_task|assign_owner|move_deal|webhook|stage_tasks)(?=\.|$)"
)
_CONDITION_RE = re.compile(r"^conditions\.\d+$")


def _tidy_rule_errors(errors: Mapping[str, str]) -> dict[str, str]:
    """``actions.0.create_task.title`` → ``actions.0.title`` (pydantic puts the union tag in
    the path); a condition's value/op mismatch → ``conditions.N.value``."""
    out: dict[str, str] = {}
    for key, msg in errors.items():
        key = _ACTION_TAG_RE.sub(r"\1", key)
        if _CONDITION_RE.match(key) and msg.startswith("value "):
            key = f"{key}.value"
        out.setdefault(key, msg)
    return out


# --------------------------------------------------------------------------------------------
# Assignees
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class AssigneeSpec:
    mode: Literal["owner", "user", "round_robin"]
    user_ids: tuple[str, ...] = ()


def parse_assignee(value: str) -> AssigneeSpec:
    """``owner`` | ``user:<id>`` | ``round_robin:a,b`` (or ``round_robin:[a, b]``)."""
    v = value.strip()
    if v == OWNER:
        return AssigneeSpec("owner")
    if v.startswith(USER_PREFIX):
        uid = v[len(USER_PREFIX) :].strip()
        if not uid:
            raise ValueError("user: needs a user id")
        return AssigneeSpec("user", (uid,))
    if v.startswith(ROUND_ROBIN_PREFIX):
        raw = v[len(ROUND_ROBIN_PREFIX) :].strip()
        if raw.startswith("[") and raw.endswith("]"):
            raw = raw[1:-1]
        ids = tuple(p.strip().strip("'\"").strip() for p in raw.split(","))
        ids = tuple(i for i in ids if i)
        if not ids:
            raise ValueError("round_robin: needs at least one user id")
        return AssigneeSpec("round_robin", ids)
    raise ValueError("must be owner, user:<id> or round_robin:<id>,<id>")


# --------------------------------------------------------------------------------------------
# Context and actions
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StageTask:
    """A task template configured for a pipeline stage."""

    title: str
    kind: TaskKind = "other"
    due_in_s: int = STAGE_TASK_DUE_IN_S
    assignee: str = OWNER
    remind_before_s: int | None = None


@dataclasses.dataclass(frozen=True)
class RuleContext:
    """What :func:`evaluate` needs besides the event; the handler fills it from its read models.

    ``round_robin`` holds the counters per ``Action.round_robin_key``; the counters to store
    afterwards are in the actions (:func:`updated_counters`).
    Owner resolution for ``assignee: owner``: deal owner (deal events), then contact owner,
    then channel owner; each taken from here first, else from the event payload
    (``deal_owner_id``/``owner_id`` on deal events, ``contact_owner_id``/``owner_id`` on
    contact events, ``channel_owner_id``)."""

    now: datetime
    contact_owner_id: str | None = None
    channel_owner_id: str | None = None
    deal_owner_id: str | None = None
    round_robin: Mapping[str, int] = dataclasses.field(default_factory=dict)
    stage_tasks: Mapping[str, Sequence[StageTask | Mapping[str, Any]]] = dataclasses.field(
        default_factory=dict
    )


ActionType = Literal["create_task", "assign_owner", "move_deal", "webhook"]


@dataclasses.dataclass(frozen=True)
class Action:
    """A concrete action to carry out.

    ``params`` by type:

    * ``create_task``: ``title, kind, due_at`` (aware datetime), ``assignee_id`` (or None),
      ``contact_id, deal_id, remind_before_s`` — a ready ``TaskCreate`` body
      (see :func:`task_create_body` / :func:`apply_create_task`);
    * ``assign_owner``: ``user_id, contact_id, deal_id`` (the subject to give the owner to);
    * ``move_deal``: ``deal_id, stage_id``;
    * ``webhook``: ``url, event`` (the triggering event to POST).

    Events produced by carrying the action out must carry ``caused_by_rule``,
    ``rule_chain`` and ``caused_by_subject`` (see :meth:`causation`)."""

    type: ActionType
    rule_id: str
    params: dict[str, Any]
    idempotency_key: str
    subject_id: str | None
    rule_chain: tuple[str, ...]
    round_robin_key: str | None = None
    round_robin_counter: int | None = None

    def causation(self) -> dict[str, Any]:
        """The fields to put into the payload of every event this action causes."""
        return {
            "caused_by_rule": self.rule_id,
            "rule_chain": list(self.rule_chain),
            "caused_by_subject": self.subject_id,
        }


# --------------------------------------------------------------------------------------------
# Condition evaluation
# --------------------------------------------------------------------------------------------

_MISSING = object()


def lookup(payload: Any, path: str) -> Any:
    """Value at a dotted path (dict keys, list indices); ``_MISSING`` sentinel if absent."""
    current = payload
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list | tuple) and part.lstrip("-").isdigit():
            idx = int(part)
            if not -len(current) <= idx < len(current):
                return _MISSING
            current = current[idx]
        else:
            return _MISSING
    return current


def _norm(v: Any) -> Any:
    return v.casefold() if isinstance(v, str) else v


def _ordered(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Comparable pair: numbers with numbers, ISO datetimes with datetimes, else strings."""
    if isinstance(left, bool) or isinstance(right, bool):
        return None
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left, right
    if isinstance(left, datetime) or isinstance(right, datetime):
        try:
            lt = left if isinstance(left, datetime) else datetime.fromisoformat(str(left))
            rt = right if isinstance(right, datetime) else datetime.fromisoformat(str(right))
            return _utc(lt), _utc(rt)
        except ValueError:
            return None
    if isinstance(left, str) and isinstance(right, str):
        try:
            return _utc(datetime.fromisoformat(left)), _utc(datetime.fromisoformat(right))
        except ValueError:
            pass
        try:
            return float(left), float(right)
        except ValueError:
            return left, right
    if isinstance(left, str) and isinstance(right, int | float):
        try:
            return float(left), right
        except ValueError:
            return None
    return None


def condition_holds(cond: Condition, payload: Mapping[str, Any]) -> bool:
    """One condition against the payload. Strings compare case-insensitively for
    ``eq/ne/in/not_in/contains``; a missing field makes ``ne``/``not_in`` true and
    every other op (but ``exists: false``) false."""
    actual = lookup(payload, cond.field)
    op, expected = cond.op, cond.value
    if op == "exists":
        present = actual is not _MISSING and actual is not None
        return present is (True if expected is None else bool(expected))
    if actual is _MISSING:
        return op in ("ne", "not_in")
    if op == "eq":
        return bool(_norm(actual) == _norm(expected))
    if op == "ne":
        return bool(_norm(actual) != _norm(expected))
    if op in ("in", "not_in"):
        inside = _norm(actual) in [_norm(x) for x in expected]
        return inside if op == "in" else not inside
    if op == "contains":
        if isinstance(actual, str):
            return str(expected).casefold() in actual.casefold()
        if isinstance(actual, list | tuple):
            return _norm(expected) in [_norm(x) for x in actual]
        if isinstance(actual, Mapping):
            return expected in actual
        return False
    pair = _ordered(actual, expected)
    if pair is None:
        return False
    a, b = pair
    try:
        if op == "gt":
            return bool(a > b)
        if op == "gte":
            return bool(a >= b)
        if op == "lt":
            return bool(a < b)
        return bool(a <= b)
    except TypeError:
        return False


def rule_matches(rule: Rule, event: Mapping[str, Any]) -> bool:
    """Enabled, same event type, every condition holds (no loop protection here)."""
    if not rule.enabled or rule.event_type != event.get("event_type"):
        return False
    payload = event.get("payload") or {}
    return all(condition_holds(c, payload) for c in rule.conditions)


# --------------------------------------------------------------------------------------------
# Loop protection
# --------------------------------------------------------------------------------------------


def _get(event: Mapping[str, Any], key: str) -> Any:
    """A causation field from the event top level, else its payload."""
    if event.get(key) is not None:
        return event[key]
    payload = event.get("payload") or {}
    return payload.get(key) if isinstance(payload, Mapping) else None


def event_subject(event: Mapping[str, Any]) -> str | None:
    """The record an event is about: ``subject_id`` if given; deal events → ``deal_id``;
    task events → the task's contact, else deal, else task; everything else → ``contact_id``."""
    explicit = _get(event, "subject_id")
    if explicit:
        return str(explicit)
    payload = event.get("payload") or {}
    etype = str(event.get("event_type", ""))
    order: tuple[str, ...]
    if etype.startswith("deal."):
        order = ("deal_id", "contact_id")
    elif etype.startswith("task."):
        order = ("contact_id", "deal_id", "task_id")
    else:
        order = ("contact_id", "deal_id", "id")
    for key in order:
        if payload.get(key):
            return str(payload[key])
    return None


def rule_chain(event: Mapping[str, Any]) -> tuple[str, ...]:
    """The rules that led to this event, oldest first."""
    chain = [str(r) for r in (_get(event, "rule_chain") or [])]
    caused_by = _get(event, "caused_by_rule")
    if caused_by and str(caused_by) not in chain:
        chain.append(str(caused_by))
    return tuple(chain)


def loop_blocked(rule_id: str, event: Mapping[str, Any]) -> bool:
    """True when ``rule_id`` already acted on this event's subject up the causal chain."""
    chain = rule_chain(event)
    if len(chain) >= MAX_RULE_CHAIN:
        return True
    if rule_id not in chain:
        return False
    origin = _get(event, "caused_by_subject")
    subject = event_subject(event)
    return origin is None or subject is None or str(origin) == subject


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _event_key(event: Mapping[str, Any]) -> str:
    if event.get("event_id"):
        return str(event["event_id"])
    if event.get("idempotency_key"):
        return str(event["idempotency_key"])
    blob = json.dumps({"t": event.get("event_type"), "p": event.get("payload")}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _resolve_owner(event: Mapping[str, Any], ctx: RuleContext) -> str | None:
    payload = event.get("payload") or {}
    etype = str(event.get("event_type", ""))
    candidates: list[Any] = []
    if etype.startswith("deal."):
        candidates += [ctx.deal_owner_id, payload.get("deal_owner_id"), payload.get("owner_id")]
    candidates += [ctx.contact_owner_id, payload.get("contact_owner_id")]
    if etype.startswith(("contact.", "interaction.")):
        # contact.* events and interaction.recorded carry the contact's owner as ``owner_id``
        candidates.append(payload.get("owner_id"))
    candidates += [ctx.channel_owner_id, payload.get("channel_owner_id")]
    for c in candidates:
        if c:
            return str(c)
    return None


def _entered_stage(payload: Mapping[str, Any]) -> str | None:
    for key in ("to_stage_id", "stage_id", "new_stage_id"):
        if payload.get(key):
            return str(payload[key])
    return None


def parse_stage_task(spec: StageTask | Mapping[str, Any]) -> StageTask:
    """Validate a stage task template (``{title, kind?, due_in_s?, assignee?,
    remind_before_s?}``); errors → :class:`ValidationFailed`. Use when a stage's tasks are
    configured."""
    data = dataclasses.asdict(spec) if isinstance(spec, StageTask) else dict(spec)
    data["type"] = "create_task"
    data.setdefault("due_in_s", STAGE_TASK_DUE_IN_S)
    parsed = parse_model(CreateTaskSpec, data)
    return StageTask(
        title=parsed.title,
        kind=parsed.kind,
        due_in_s=parsed.due_in_s,
        assignee=parsed.assignee,
        remind_before_s=parsed.remind_before_s,
    )


def _stage_specs(templates: Iterable[StageTask | Mapping[str, Any]]) -> list[CreateTaskSpec | None]:
    """Templates as create_task specs; an invalid template becomes ``None`` (skipped: stage
    configuration is validated when it is saved, a bad leftover must not poison the consumer)."""
    out: list[CreateTaskSpec | None] = []
    for t in templates:
        data = dataclasses.asdict(t) if isinstance(t, StageTask) else dict(t)
        data["type"] = "create_task"
        data.setdefault("due_in_s", STAGE_TASK_DUE_IN_S)
        try:
            out.append(parse_model(CreateTaskSpec, data))
        except ValidationFailed:
            out.append(None)
    return out


def _expand(rule: Rule, payload: Mapping[str, Any], context: RuleContext) -> list[tuple[str, Any]]:
    """The rule's action specs with their stable index; ``stage_tasks`` expanded."""
    specs: list[tuple[str, Any]] = []
    for i, spec in enumerate(rule.actions):
        if isinstance(spec, StageTasksSpec):
            stage = _entered_stage(payload)
            templates = context.stage_tasks.get(stage, ()) if stage else ()
            specs += [(f"{i}.{j}", t) for j, t in enumerate(_stage_specs(templates)) if t]
        else:
            specs.append((str(i), spec))
    return specs


def _create_task_params(
    spec: CreateTaskSpec,
    rr_key: str,
    event: Mapping[str, Any],
    context: RuleContext,
    counters: dict[str, int],
) -> tuple[dict[str, Any], int | None]:
    """Concrete ``create_task`` params, and the new round-robin counter when one was used
    (``counters`` is updated so a later action of the same evaluation sees it)."""
    payload = event.get("payload") or {}
    assignee = parse_assignee(spec.assignee)
    rr_counter: int | None = None
    if assignee.mode == "owner":
        assignee_id = _resolve_owner(event, context)
    elif assignee.mode == "user":
        assignee_id = assignee.user_ids[0]
    else:
        current = counters.get(rr_key, 0)
        assignee_id = assignee.user_ids[current % len(assignee.user_ids)]
        rr_counter = counters[rr_key] = current + 1
    params = {
        "title": spec.title,
        "kind": spec.kind,
        "due_at": _utc(context.now) + timedelta(seconds=spec.due_in_s),
        "assignee_id": assignee_id,
        "contact_id": payload.get("contact_id"),
        "deal_id": payload.get("deal_id"),
        "remind_before_s": spec.remind_before_s,
    }
    return params, rr_counter


def evaluate(rules: Iterable[Rule], event: Mapping[str, Any], context: RuleContext) -> list[Action]:
    """The concrete actions ``rules`` take on ``event`` (rules in order, actions in order).

    Disabled rules, other event types, failed conditions and loop-protected rules yield nothing;
    ``move_deal`` on an event without ``deal_id`` is dropped.
    Round robin: the counter for ``Action.round_robin_key`` (``<rule id>:<action index>``) is
    read from ``context.round_robin`` (missing = 0); the user at ``counter % len(users)`` is
    picked and ``Action.round_robin_counter`` is the counter to store
    (:func:`updated_counters`)."""
    payload = event.get("payload") or {}
    subject = event_subject(event)
    chain_in = rule_chain(event)
    key = _event_key(event)
    counters = dict(context.round_robin)
    out: list[Action] = []
    for rule in rules:
        if not rule_matches(rule, event) or loop_blocked(rule.id, event):
            continue
        chain = (*chain_in, rule.id)
        for idx, spec in _expand(rule, payload, context):
            type_: ActionType
            rr_key: str | None = None
            rr_counter: int | None = None
            if isinstance(spec, CreateTaskSpec):
                type_ = "create_task"
                rr_key = f"{rule.id}:{idx}"
                params, rr_counter = _create_task_params(spec, rr_key, event, context, counters)
                if rr_counter is None:
                    rr_key = None
            elif isinstance(spec, AssignOwnerSpec):
                type_ = "assign_owner"
                params = {
                    "user_id": spec.user_id,
                    "contact_id": payload.get("contact_id"),
                    "deal_id": payload.get("deal_id"),
                }
            elif isinstance(spec, MoveDealSpec):
                if not payload.get("deal_id"):
                    continue  # nothing to move
                type_ = "move_deal"
                params = {"deal_id": payload["deal_id"], "stage_id": spec.stage_id}
            elif isinstance(spec, WebhookSpec):
                type_ = "webhook"
                params = {"url": spec.url, "event": dict(event), "secret": spec.secret}
            else:  # pragma: no cover - the Rule model admits no other spec
                continue
            out.append(
                Action(
                    type=type_,
                    rule_id=rule.id,
                    params=params,
                    idempotency_key=f"rule:{rule.id}:{key}:{idx}",
                    subject_id=subject,
                    rule_chain=chain,
                    round_robin_key=rr_key,
                    round_robin_counter=rr_counter,
                )
            )
    return out


def updated_counters(counters: Mapping[str, int], actions: Iterable[Action]) -> dict[str, int]:
    """Round-robin counters after ``actions`` (to persist for the next evaluation)."""
    out = dict(counters)
    for a in actions:
        if a.round_robin_key is not None and a.round_robin_counter is not None:
            out[a.round_robin_key] = a.round_robin_counter
    return out


def task_create_body(action: Action) -> dict[str, Any]:
    """A ``TaskCreate`` body from a ``create_task`` action (``None`` fields dropped)."""
    if action.type != "create_task":
        raise ValueError(f"not a create_task action: {action.type}")
    return {k: v for k, v in action.params.items() if v is not None}


def apply_create_task(
    action: Action, *, task_id: str, tenant_id: str, now: datetime
) -> tuple[Task, list[Event]]:
    """Carry out a ``create_task`` action: the new task and its ``task.created`` event, stamped
    with the causal chain (``caused_by_rule``, ``rule_chain``, ``caused_by_subject``).
    Use the action's ``idempotency_key`` in the repository to make the insert idempotent
    (e.g. as the task id source, or a unique index)."""
    task, events = create_task(
        task_create_body(action),
        task_id=task_id,
        tenant_id=tenant_id,
        now=now,
        caused_by_rule=action.rule_id,
        rule_chain=action.rule_chain,
    )
    for ev in events:
        ev["payload"].update(action.causation())
    return task, events


# --------------------------------------------------------------------------------------------
# Built-in rules
# --------------------------------------------------------------------------------------------

MISSED_CALL_CALLBACK = "missed_call_callback"
MISSED_CALL_INBOX_CALLBACK = "missed_call_inbox_callback"
NEW_LEAD_FIRST_CONTACT = "new_lead_first_contact"
STAGE_TASKS = "stage_tasks"
BUILTIN_RULE_IDS: frozenset[str] = frozenset(
    {MISSED_CALL_CALLBACK, MISSED_CALL_INBOX_CALLBACK, NEW_LEAD_FIRST_CONTACT, STAGE_TASKS}
)

LEAD_INTERACTION_KINDS = ["form", "ad_lead"]
"""``contact.created`` ``interaction_kind`` values that count as a new lead: whatever the channel
(``form``, ``tilda``, ``typeform``, ``vk`` lead forms, ``meta_leads``, ``google_ads``...), the
connectors normalise a form submission to ``form`` and an ad-platform lead to ``ad_lead``."""
LEAD_SOURCE_KINDS = LEAD_INTERACTION_KINDS  # kept for callers of the first draft


def default_rules() -> list[Rule]:
    """The built-in rules every tenant has unless switched off by id.

    * ``missed_call_callback`` — ``interaction.recorded`` with ``kind: call``,
      ``direction: in``, ``data.status: missed`` → ``call`` task "Call back" due in 15 min,
      assigned to the contact's owner, else the channel's owner.
    * ``missed_call_inbox_callback`` — ``inbox.call_missed`` (a missed call from an unknown number
      waiting in the inbox) → the same call-back task for the channel's owner.
    * ``new_lead_first_contact`` — ``contact.created`` whose ``interaction_kind`` is ``form`` or
      ``ad_lead`` (a contact made by a form submission or an ad lead, whatever the channel) →
      ``call`` task "First contact" due in 1 h for the owner (contact owner, else channel owner).
    * ``stage_tasks`` — ``deal.stage_changed`` → the tasks configured for the entered stage
      (``to_stage_id``/``stage_id`` in the payload; :attr:`RuleContext.stage_tasks`)."""
    raw: list[dict[str, Any]] = [
        {
            "id": MISSED_CALL_CALLBACK,
            "name": "Call back a missed inbound call",
            "event_type": "interaction.recorded",
            "conditions": [
                {"field": "kind", "op": "eq", "value": "call"},
                {"field": "direction", "op": "eq", "value": "in"},
                {"field": "data.status", "op": "eq", "value": "missed"},
            ],
            "actions": [
                {
                    "type": "create_task",
                    "title": "Call back",
                    "kind": "call",
                    "due_in_s": 15 * 60,
                    "assignee": OWNER,
                }
            ],
        },
        {
            "id": MISSED_CALL_INBOX_CALLBACK,
            "name": "Call back a missed call from an unknown number (in the inbox)",
            "event_type": "inbox.call_missed",
            "conditions": [],
            "actions": [
                {
                    "type": "create_task",
                    "title": "Call back (unknown number, see the inbox)",
                    "kind": "call",
                    "due_in_s": 15 * 60,
                    "assignee": OWNER,
                }
            ],
        },
        {
            "id": NEW_LEAD_FIRST_CONTACT,
            "name": "First contact with a new lead",
            "event_type": "contact.created",
            "conditions": [{"field": "interaction_kind", "op": "in", "value": LEAD_INTERACTION_KINDS}],
            "actions": [
                {
                    "type": "create_task",
                    "title": "First contact",
                    "kind": "call",
                    "due_in_s": 3600,
                    "assignee": OWNER,
                }
            ],
        },
        {
            "id": STAGE_TASKS,
            "name": "Tasks of the entered stage",
            "event_type": "deal.stage_changed",
            "conditions": [],
            "actions": [{"type": "stage_tasks"}],
        },
    ]
    return [Rule.model_validate({**r, "builtin": True}) for r in raw]


def effective_rules(custom_rules: Iterable[Rule] = (), disabled_rule_ids: Iterable[str] = ()) -> list[Rule]:
    """Built-in rules not switched off, then the tenant's own rules (in the given order)."""
    disabled = set(disabled_rule_ids)
    return [r for r in default_rules() if r.id not in disabled] + [
        r for r in custom_rules if r.id not in disabled
    ]


__all__ = [
    "BUILTIN_RULE_IDS",
    "LEAD_INTERACTION_KINDS",
    "LEAD_SOURCE_KINDS",
    "MAX_RULE_CHAIN",
    "MISSED_CALL_CALLBACK",
    "NEW_LEAD_FIRST_CONTACT",
    "OPS",
    "STAGE_TASKS",
    "Action",
    "AssigneeSpec",
    "Condition",
    "Rule",
    "RuleContext",
    "StageTask",
    "apply_create_task",
    "condition_holds",
    "default_rules",
    "effective_rules",
    "evaluate",
    "event_subject",
    "lookup",
    "loop_blocked",
    "parse_assignee",
    "parse_rule",
    "parse_stage_task",
    "rule_chain",
    "rule_matches",
    "task_create_body",
    "updated_counters",
]
