"""The deals domain: pipelines, stages, deals, moves, stage history, probabilities, loss reasons.

Pure: no I/O, no clock, no id generator of its own. Every command is a function taking the current
state, the command's data, ``now`` (an aware datetime) and, where something new gets an id, a
``new_id`` factory; it returns the new state and a list of domain events, and never mutates its
arguments. Handlers persist the state and publish the events (same write, via the outbox).

Events are plain dicts ``{"event_type": "deal.stage_changed", "payload": {...}}`` whose payloads are
JSON-ready (ids, ISO 8601 timestamps, money as decimal strings). They carry no personal data: deal
titles, custom fields and task titles stay out of them.

Probability: a deal has an *effective* ``probability`` (stored, so reads and analytics need no
pipeline) and an optional ``probability_override`` set explicitly by a client. The effective value
is 100 in the won stage, 0 in the lost stage, else the override when set, else the current stage's
probability; so it follows the stage on every move unless it was set explicitly, and setting
``probability`` to ``null`` in a PATCH makes it follow the stage again.

Serialisation: ``to_doc()``/``from_doc()`` for MongoDB (``_id`` is the id, datetimes stay
``datetime``, naive ones read back are UTC, dates are ``YYYY-MM-DD`` strings); ``to_public()`` for
the API (``id``, ISO 8601 strings).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Literal

from services.deals.money import (
    MoneyError,
    format_amount,
    normalize_currency,
    parse_amount,
    weighted_amount,
)
from shared.errors import AppError

StageKind = Literal["open", "won", "lost"]
DealStatus = Literal["open", "won", "lost"]
Event = dict[str, Any]
IdFactory = Callable[[], str]

NAME_MAX = 200
TITLE_MAX = 500
REASON_MAX = 500
ERASED_TITLE = "Erased"
DEFAULT_WON_NAME = "Won"
DEFAULT_LOST_NAME = "Lost"
SOURCE_KEYS = (
    "channel_id",
    "kind",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
)


# --------------------------------------------------------------------------------------- errors


class DomainError(AppError):
    """An expected failure with an HTTP meaning (an :class:`~shared.errors.AppError`, so an RPC
    method that lets it escape answers the right status as problem+json).

    ``status`` is the HTTP status, ``code`` a stable machine-readable string, ``detail`` the human
    message and ``errors`` maps field path → message (422).
    """

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(
        self, detail: str, *, errors: Mapping[str, str] | None = None, code: str | None = None
    ) -> None:
        super().__init__(detail, errors=dict(errors or {}), code=code)


class ValidationFailed(DomainError):
    """422: ``errors`` names each offending field by its dotted path (``stages.1.probability``)."""

    status, code, title = 422, "validation_failed", "Validation failed"

    def __init__(self, errors: Mapping[str, str], detail: str | None = None) -> None:
        super().__init__(detail or "; ".join(f"{k}: {v}" for k, v in errors.items()), errors=errors)


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class _Errors:
    """Collects every field error of one command, so a client learns all of them at once."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def add(self, path: str, message: str) -> None:
        self.items.setdefault(path, message)

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationFailed(self.items)


# ------------------------------------------------------------------------------------- helpers


def as_utc(value: datetime) -> datetime:
    """Aware UTC; naive datetimes (as pymongo returns them) are taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def _opt_dt(value: Any) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None


def parse_datetime(value: Any) -> datetime:
    """A datetime or an ISO 8601 string (``Z`` allowed); no offset means UTC; else ValueError."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str) and value.strip():
        return as_utc(datetime.fromisoformat(value.strip()))
    raise ValueError("not a timestamp")


def parse_date(value: Any) -> date:
    """A ``date`` or a ``YYYY-MM-DD`` string. ``ValueError`` otherwise."""
    if isinstance(value, datetime):
        raise ValueError("a date, not a timestamp")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value.strip())
    raise ValueError("not a date")


def _text_error(value: Any, limit: int) -> str | None:
    if value is None:
        return "is required"
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "must not be empty"
    if len(value.strip()) > limit:
        return f"must be at most {limit} characters"
    return None


def _opt_id(value: Any, path: str, errs: _Errors) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        errs.add(path, "must be a non-empty string id")
        return None
    return value.strip()


def _probability(value: Any, path: str, errs: _Errors) -> int | None:
    """An integer 0..100 (an integral float like ``50.0`` is accepted), else an error."""
    if value is None:
        errs.add(path, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        errs.add(path, "must be an integer from 0 to 100")
        return None
    if isinstance(value, float) and not value.is_integer():
        errs.add(path, "must be an integer from 0 to 100")
        return None
    number = int(value)
    if not 0 <= number <= 100:
        errs.add(path, "must be an integer from 0 to 100")
        return None
    return number


def _event(event_type: str, payload: dict[str, Any]) -> Event:
    return {"event_type": event_type, "payload": payload}


# ----------------------------------------------------------------------------------- pipelines


@dataclass(frozen=True)
class Stage:
    id: str
    name: str
    probability: int
    kind: StageKind = "open"

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "probability": self.probability,
            "kind": self.kind,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Stage:
        return cls(
            id=str(doc["id"]),
            name=str(doc["name"]),
            probability=int(doc["probability"]),
            kind=doc.get("kind", "open"),
        )


@dataclass(frozen=True)
class Pipeline:
    """A tenant's sales pipeline: open stages in order, then exactly one won and one lost stage."""

    id: str
    tenant_id: str
    name: str
    stages: tuple[Stage, ...]
    default: bool
    created_at: datetime
    updated_at: datetime

    @property
    def open_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.kind == "open")

    @property
    def first_open_stage(self) -> Stage:
        return self.open_stages[0]

    @property
    def won_stage(self) -> Stage:
        return next(s for s in self.stages if s.kind == "won")

    @property
    def lost_stage(self) -> Stage:
        return next(s for s in self.stages if s.kind == "lost")

    def stage(self, stage_id: str) -> Stage | None:
        return next((s for s in self.stages if s.id == stage_id), None)

    def stage_by_name(self, name: str) -> Stage | None:
        key = name.strip().casefold()
        return next((s for s in self.stages if s.name.casefold() == key), None)

    def stage_index(self, stage_id: str) -> int | None:
        """Position of the stage in :attr:`stages` (open stages first, then won, then lost)."""
        return next((i for i, s in enumerate(self.stages) if s.id == stage_id), None)

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "stages": [s.to_doc() for s in self.stages],
            "default": self.default,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Pipeline:
        return cls(
            id=str(doc.get("_id", doc.get("id"))),
            tenant_id=str(doc["tenant_id"]),
            name=str(doc["name"]),
            stages=tuple(Stage.from_doc(s) for s in doc["stages"]),
            default=bool(doc.get("default", False)),
            created_at=as_utc(doc["created_at"]),
            updated_at=as_utc(doc["updated_at"]),
        )

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "stages": [s.to_doc() for s in self.stages],
            "default": self.default,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _pipeline_payload(pipeline: Pipeline, now: datetime) -> dict[str, Any]:
    return {
        "pipeline_id": pipeline.id,
        "name": pipeline.name,
        "stages": [s.to_doc() for s in pipeline.stages],
        "default": pipeline.default,
        "occurred_at": _iso(now),
    }


def delete_pipeline(
    pipeline: Pipeline, pipelines: Sequence[Pipeline], deals_held: int, now: datetime
) -> tuple[Pipeline | None, list[Event]]:
    """Delete an empty pipeline: 409 ``pipeline_has_deals`` while any deal (open, won or lost) is in
    it, since its history and reports depend on the stages. Deleting the default pipeline makes the
    oldest remaining one the default (returned, to be saved).

    Events: ``pipeline.deleted``; ``pipeline.updated`` for the pipeline made default."""
    if deals_held:
        raise Conflict(
            "A pipeline that holds deals cannot be deleted: move or delete its deals first.",
            errors={"pipeline_id": f"holds {deals_held} deal(s)"},
            code="pipeline_has_deals",
        )
    events = [
        _event(
            "pipeline.deleted", {"pipeline_id": pipeline.id, "name": pipeline.name, "occurred_at": _iso(now)}
        )
    ]
    rest = [p for p in pipelines if p.id != pipeline.id]
    promoted = replace(rest[0], default=True) if pipeline.default and rest else None
    if promoted is not None:
        events.append(_event("pipeline.updated", _pipeline_payload(promoted, now)))
    return promoted, events


def restore_pipeline(pipeline: Pipeline, now: datetime) -> tuple[Pipeline, list[Event]]:
    """Undo a delete that raced a new deal: the pipeline comes back (not as the default, which
    another pipeline may hold by now). Event: ``pipeline.created``."""
    back = replace(pipeline, default=False)
    return back, [_event("pipeline.created", _pipeline_payload(back, now))]


def _check_default(data: Mapping[str, Any], errs: _Errors) -> bool | None:
    if "default" not in data or data["default"] is None:
        return None
    if not isinstance(data["default"], bool):
        errs.add("default", "must be true or false")
        return None
    return data["default"]


def _check_name(data: Mapping[str, Any], errs: _Errors, *, required: bool) -> str | None:
    if "name" not in data and not required:
        return None
    problem = _text_error(data.get("name"), NAME_MAX)
    if problem:
        errs.add("name", problem)
        return None
    return str(data["name"]).strip()


def create_pipeline(
    tenant_id: str, data: Mapping[str, Any], new_id: IdFactory, now: datetime
) -> tuple[Pipeline, list[Event]]:
    """Validate ``{"name", "stages": [{"name", "probability"}], "default"?}`` into a new pipeline.

    The stages given are the open stages, in order; the won (100) and lost (0) stages are added.
    An item with ``"kind": "won"|"lost"`` names that terminal stage instead (so a pipeline read back
    can be posted again). Raises :class:`ValidationFailed` naming every bad field.
    Event: ``pipeline.created`` (the handler clears ``default`` on the tenant's other pipelines when
    this one is the default).
    """
    errs = _Errors()
    name = _check_name(data, errs, required=True)
    default = _check_default(data, errs)
    stages = _build_stages(data.get("stages"), new_id, errs, existing=None)
    errs.raise_if_any()
    assert name is not None and stages is not None
    at = as_utc(now)
    pipeline = Pipeline(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        stages=stages,
        default=bool(default),
        created_at=at,
        updated_at=at,
    )
    return pipeline, [_event("pipeline.created", _pipeline_payload(pipeline, at))]


def _build_stages(
    raw: Any,
    new_id: IdFactory,
    errs: _Errors,
    *,
    existing: Pipeline | None,
) -> tuple[Stage, ...] | None:
    """The full stage list from client input; ``existing`` given = an edit (ids keep stages)."""
    if raw is None:
        errs.add("stages", "is required")
        return None
    if not isinstance(raw, list):
        errs.add("stages", "must be a list of {name, probability}")
        return None
    open_items: list[tuple[int, Mapping[str, Any]]] = []
    terminal: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            errs.add(f"stages.{i}", "must be an object {name, probability}")
            continue
        kind = item.get("kind", "open")
        stage_id = item.get("id")
        if existing is not None and isinstance(stage_id, str):
            known = existing.stage(stage_id)
            if known is not None and known.kind != "open":
                kind = known.kind
        if kind in ("won", "lost"):
            if kind in terminal:
                errs.add(f"stages.{i}.kind", f"a pipeline has exactly one {kind} stage")
            terminal[kind] = (i, item)
        elif kind == "open":
            open_items.append((i, item))
        else:
            errs.add(f"stages.{i}.kind", "must be open, won or lost")
    if not open_items and not any(k.startswith("stages.") for k in errs.items):
        errs.add("stages", "a pipeline needs at least one open stage")

    seen: dict[str, int] = {}
    used_ids: set[str] = set()
    built: list[Stage] = []

    def one(i: int, item: Mapping[str, Any], kind: StageKind, default_name: str) -> Stage | None:
        stage_id = item.get("id")
        keep: Stage | None = None
        if stage_id is not None:
            if existing is None:
                errs.add(f"stages.{i}.id", "ids are assigned by the server")
                return None
            keep = existing.stage(stage_id) if isinstance(stage_id, str) else None
            if keep is None:
                errs.add(f"stages.{i}.id", "no such stage in this pipeline")
                return None
            if keep.id in used_ids:
                errs.add(f"stages.{i}.id", "appears twice")
                return None
            used_ids.add(keep.id)
        raw_name = item.get("name")
        if raw_name is None and kind != "open":
            name: str | None = keep.name if keep else default_name
        elif raw_name is None and keep is not None:
            name = keep.name
        else:
            problem = _text_error(raw_name, NAME_MAX)
            if problem:
                errs.add(f"stages.{i}.name", problem)
                name = None
            else:
                name = str(raw_name).strip()
        if name is not None:
            key = name.casefold()
            if key in seen and i < 0:
                errs.add(f"stages.{seen[key]}.name", f"is the name of the {kind} stage")
            elif key in seen:
                errs.add(f"stages.{i}.name", "stage names must be unique within a pipeline")
            seen[key] = i
        fixed = {"won": 100, "lost": 0}.get(kind)
        if fixed is not None:
            if "probability" in item and item["probability"] is not None:
                given = _probability(item["probability"], f"stages.{i}.probability", errs)
                if given is not None and given != fixed:
                    errs.add(f"stages.{i}.probability", f"the {kind} stage has probability {fixed}")
            probability: int | None = fixed
        elif "probability" not in item and keep is not None:
            probability = keep.probability
        else:
            probability = _probability(item.get("probability"), f"stages.{i}.probability", errs)
        if name is None or probability is None:
            return None
        return Stage(id=keep.id if keep else "", name=name, probability=probability, kind=kind)

    for i, item in open_items:
        stage = one(i, item, "open", "")
        if stage is not None:
            built.append(stage)
    for kind, default_name in (("won", DEFAULT_WON_NAME), ("lost", DEFAULT_LOST_NAME)):
        if kind in terminal:
            i, item = terminal[kind]
            if existing is not None and item.get("id") is None:
                old = existing.won_stage if kind == "won" else existing.lost_stage
                item = {**item, "id": old.id}
        elif existing is not None:
            old = existing.won_stage if kind == "won" else existing.lost_stage
            i, item = -1, {"id": old.id}
        else:
            i, item = -1, {}
        stage = one(i, item, kind, default_name)  # type: ignore[arg-type]
        if stage is not None:
            built.append(stage)
    if errs.items:
        return None
    return tuple(s if s.id else replace(s, id=new_id()) for s in built)


@dataclass(frozen=True)
class PipelineEdit:
    """The result of :func:`edit_pipeline`.

    ``move_plan`` maps each deleted stage id that holds deals to the stage its deals move to; the
    handler moves them with :func:`move` (against the new pipeline) before or with saving it.
    """

    pipeline: Pipeline
    events: list[Event]
    move_plan: dict[str, str]
    deleted_stage_ids: tuple[str, ...]


def edit_pipeline(
    pipeline: Pipeline,
    patch: Mapping[str, Any],
    new_id: IdFactory,
    now: datetime,
    deal_counts: Mapping[str, int] | None = None,
) -> PipelineEdit:
    """Apply a PATCH: ``{"name"?, "default"?, "stages"?, "stage_moves"?}``.

    ``stages``, when given, is the full desired list of open stages in order: an item with an
    ``id`` keeps (renames, re-weights, re-orders) that stage, an item without one adds a stage, and
    an open stage left out is deleted. Won/lost stages may be renamed by listing them with their id
    (or ``kind``); they are never deleted. ``deal_counts`` (stage id → number of deals in it) comes
    from the repository: deleting a stage that holds deals raises :class:`Conflict`
    (``code="stage_has_deals"``, ``errors`` naming the stage) unless ``stage_moves`` maps its id
    to a remaining open stage's id, which is returned in :attr:`PipelineEdit.move_plan`.
    Event: ``pipeline.updated`` (none when nothing changed).
    """
    counts = deal_counts or {}
    errs = _Errors()
    name = _check_name(patch, errs, required=False)
    default = _check_default(patch, errs)
    stages = pipeline.stages
    if "stages" in patch:
        built = _build_stages(patch.get("stages"), new_id, errs, existing=pipeline)
        if built is not None:
            stages = built
    raw_moves = patch.get("stage_moves") or {}
    if not isinstance(raw_moves, Mapping):
        errs.add("stage_moves", "must map a deleted stage id to a target stage id")
        raw_moves = {}
    errs.raise_if_any()

    kept = {s.id for s in stages}
    deleted = tuple(s.id for s in pipeline.stages if s.id not in kept)
    plan: dict[str, str] = {}
    blocked: dict[str, str] = {}
    for stage_id, target in raw_moves.items():
        if stage_id not in deleted:
            errs.add(f"stage_moves.{stage_id}", "is not a stage being deleted")
            continue
        target_stage = next((s for s in stages if s.id == target), None)
        if target_stage is None or target_stage.kind != "open":
            errs.add(f"stage_moves.{stage_id}", "must name an open stage that remains")
            continue
    errs.raise_if_any()
    for stage_id in deleted:
        if counts.get(stage_id, 0) > 0:
            if stage_id in raw_moves:
                plan[stage_id] = str(raw_moves[stage_id])
            else:
                blocked[f"stages.{stage_id}"] = (
                    f"holds {counts[stage_id]} deal(s); name a target in stage_moves"
                )
    if blocked:
        raise Conflict(
            "A stage that still holds deals cannot be deleted without a target stage.",
            errors=blocked,
            code="stage_has_deals",
        )

    new = replace(
        pipeline,
        name=name if name is not None else pipeline.name,
        default=default if default is not None else pipeline.default,
        stages=stages,
    )
    if new == pipeline:
        return PipelineEdit(pipeline, [], {}, ())
    new = replace(new, updated_at=as_utc(now))
    payload = _pipeline_payload(new, as_utc(now))
    payload["deleted_stage_ids"] = list(deleted)
    payload["move_plan"] = dict(plan)
    return PipelineEdit(new, [_event("pipeline.updated", payload)], plan, deleted)


def delete_stage(
    pipeline: Pipeline,
    stage_id: str,
    now: datetime,
    deal_count: int = 0,
    target_stage_id: str | None = None,
) -> PipelineEdit:
    """Delete one open stage (see :func:`edit_pipeline` for the conflict and the move plan).

    Raises :class:`NotFound` for an unknown stage and :class:`ValidationFailed` for the won/lost
    stage or the last open stage.
    """
    stage = pipeline.stage(stage_id)
    if stage is None:
        raise NotFound("No such stage in this pipeline.", code="stage_not_found")
    if stage.kind != "open":
        raise ValidationFailed({"stage_id": f"the {stage.kind} stage cannot be deleted"})
    remaining = [{"id": s.id} for s in pipeline.open_stages if s.id != stage_id]
    patch: dict[str, Any] = {"stages": remaining}
    if target_stage_id is not None:
        patch["stage_moves"] = {stage_id: target_stage_id}

    def no_new_ids() -> str:  # pragma: no cover - deleting never creates a stage
        raise AssertionError("no stage is created by a delete")

    return edit_pipeline(pipeline, patch, no_new_ids, now, {stage_id: deal_count})


def select_pipeline(pipelines: Sequence[Pipeline], pipeline_id: str | None) -> Pipeline | None:
    """The pipeline a new deal goes into: the one named (422 ``pipeline_id`` when the tenant has
    no such pipeline), else the tenant's default one, else ``None`` (the caller decides: a POST
    /deals answers 422 ``pipeline_id``, an inbox accept creates no deal).
    """
    if pipeline_id is not None:
        found = next((p for p in pipelines if p.id == pipeline_id), None)
        if found is None:
            raise ValidationFailed({"pipeline_id": "no such pipeline"})
        return found
    return next((p for p in pipelines if p.default), None)


def demote_other_defaults(
    pipelines: Sequence[Pipeline], default_id: str, now: datetime
) -> list[tuple[Pipeline, list[Event]]]:
    """After ``default_id`` became the tenant's default: the other pipelines that lose the flag."""
    at = as_utc(now)
    out: list[tuple[Pipeline, list[Event]]] = []
    for pipeline in pipelines:
        if pipeline.id != default_id and pipeline.default:
            new = replace(pipeline, default=False, updated_at=at)
            payload = _pipeline_payload(new, at)
            payload["deleted_stage_ids"] = []
            payload["move_plan"] = {}
            out.append((new, [_event("pipeline.updated", payload)]))
    return out


# -------------------------------------------------------------------------------- loss reasons


def add_loss_reason(reasons: Sequence[str], text: Any) -> list[str]:
    """The tenant's list with ``text`` appended; 422 when empty, 409 when there in any case."""
    problem = _text_error(text, REASON_MAX)
    if problem:
        raise ValidationFailed({"name": problem})
    clean = str(text).strip()
    if any(r.casefold() == clean.casefold() for r in reasons):
        raise Conflict("This loss reason already exists.", code="loss_reason_exists")
    return [*reasons, clean]


def check_lost_reason(value: Any, loss_reasons: Sequence[str], path: str = "lost_reason") -> str:
    """The reason to store: the tenant's own spelling when its list is non-empty, else the text."""
    problem = _text_error(value, REASON_MAX)
    if problem:
        message = "a reason is required to lose a deal" if value is None else problem
        raise ValidationFailed({path: message})
    text = str(value).strip()
    if loss_reasons:
        match = next((r for r in loss_reasons if r.casefold() == text.casefold()), None)
        if match is None:
            raise ValidationFailed({path: "must be one of the tenant's loss reasons"})
        return match
    return text


# --------------------------------------------------------------------------------------- deals


@dataclass(frozen=True)
class StageVisit:
    stage_id: str
    entered_at: datetime
    left_at: datetime | None = None

    def to_doc(self) -> dict[str, Any]:
        return {"stage_id": self.stage_id, "entered_at": self.entered_at, "left_at": self.left_at}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> StageVisit:
        return cls(str(doc["stage_id"]), as_utc(doc["entered_at"]), _opt_dt(doc.get("left_at")))

    def to_public(self) -> dict[str, Any]:
        return {
            "stage_id": self.stage_id,
            "entered_at": _iso(self.entered_at),
            "left_at": _iso(self.left_at),
        }


@dataclass(frozen=True)
class NextAction:
    """The deal's earliest open task."""

    task_id: str
    title: str
    due_at: datetime

    def to_doc(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "title": self.title, "due_at": self.due_at}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> NextAction:
        return cls(str(doc["task_id"]), str(doc.get("title") or ""), parse_datetime(doc["due_at"]))

    def to_public(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "title": self.title, "due_at": _iso(self.due_at)}


@dataclass(frozen=True)
class Deal:
    id: str
    tenant_id: str
    title: str
    contact_id: str
    pipeline_id: str
    stage_id: str
    status: DealStatus
    probability: int
    created_at: datetime
    updated_at: datetime
    stage_history: tuple[StageVisit, ...]
    company_id: str | None = None
    amount: str | None = None
    currency: str | None = None
    owner_id: str | None = None
    probability_override: int | None = None
    expected_close: date | None = None
    next_action: NextAction | None = None
    source: dict[str, Any] | None = None
    won_at: datetime | None = None
    lost_at: datetime | None = None
    lost_reason: str | None = None
    reopened_at: datetime | None = None
    reopen_count: int = 0
    custom: dict[str, Any] = field(default_factory=dict)
    erased: bool = False
    imported: bool = False

    @property
    def current_visit(self) -> StageVisit:
        return self.stage_history[-1]

    @property
    def weighted_amount(self) -> str | None:
        """``amount * probability / 100`` as a decimal string (``None`` without an amount)."""
        return weighted_amount(self.amount, self.probability)

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "tenant_id": self.tenant_id,
            "title": self.title,
            "contact_id": self.contact_id,
            "company_id": self.company_id,
            "pipeline_id": self.pipeline_id,
            "stage_id": self.stage_id,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "owner_id": self.owner_id,
            "probability": self.probability,
            "probability_override": self.probability_override,
            "expected_close": self.expected_close.isoformat() if self.expected_close else None,
            "next_action": self.next_action.to_doc() if self.next_action else None,
            "source": copy.deepcopy(self.source),
            "won_at": self.won_at,
            "lost_at": self.lost_at,
            "lost_reason": self.lost_reason,
            "reopened_at": self.reopened_at,
            "reopen_count": self.reopen_count,
            "stage_history": [v.to_doc() for v in self.stage_history],
            "custom": copy.deepcopy(self.custom),
            "erased": self.erased,
            "imported": self.imported,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Deal:
        expected = doc.get("expected_close")
        next_action = doc.get("next_action")
        return cls(
            id=str(doc.get("_id", doc.get("id"))),
            tenant_id=str(doc["tenant_id"]),
            title=str(doc["title"]),
            contact_id=str(doc["contact_id"]),
            company_id=doc.get("company_id"),
            pipeline_id=str(doc["pipeline_id"]),
            stage_id=str(doc["stage_id"]),
            status=doc["status"],
            amount=doc.get("amount"),
            currency=doc.get("currency"),
            owner_id=doc.get("owner_id"),
            probability=int(doc["probability"]),
            probability_override=doc.get("probability_override"),
            expected_close=parse_date(expected) if expected else None,
            next_action=NextAction.from_doc(next_action) if next_action else None,
            source=copy.deepcopy(doc.get("source")),
            won_at=_opt_dt(doc.get("won_at")),
            lost_at=_opt_dt(doc.get("lost_at")),
            lost_reason=doc.get("lost_reason"),
            reopened_at=_opt_dt(doc.get("reopened_at")),
            reopen_count=int(doc.get("reopen_count") or 0),
            stage_history=tuple(StageVisit.from_doc(v) for v in doc.get("stage_history") or ()),
            custom=copy.deepcopy(dict(doc.get("custom") or {})),
            erased=bool(doc.get("erased", False)),
            imported=bool(doc.get("imported", False)),
            created_at=as_utc(doc["created_at"]),
            updated_at=as_utc(doc["updated_at"]),
        )

    def to_public(self) -> dict[str, Any]:
        """The API body of a deal."""
        return {
            "id": self.id,
            "title": self.title,
            "contact_id": self.contact_id,
            "company_id": self.company_id,
            "pipeline_id": self.pipeline_id,
            "stage_id": self.stage_id,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "owner_id": self.owner_id,
            "probability": self.probability,
            "probability_explicit": self.probability_override is not None,
            "weighted_amount": self.weighted_amount,
            "expected_close": self.expected_close.isoformat() if self.expected_close else None,
            "next_action": self.next_action.to_public() if self.next_action else None,
            "source": copy.deepcopy(self.source),
            "won_at": _iso(self.won_at),
            "lost_at": _iso(self.lost_at),
            "lost_reason": self.lost_reason,
            "reopened_at": _iso(self.reopened_at),
            "stage_history": [v.to_public() for v in self.stage_history],
            "custom": copy.deepcopy(self.custom),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def effective_probability(stage: Stage, override: int | None) -> int:
    """100 when won, 0 when lost, else the explicit override, else the stage's probability."""
    if stage.kind == "won":
        return 100
    if stage.kind == "lost":
        return 0
    return override if override is not None else stage.probability


def _money_fields(
    data: Mapping[str, Any], errs: _Errors, default_currency: str | None
) -> tuple[str | None, str | None]:
    amount: str | None = None
    currency: str | None = None
    if data.get("amount") is not None:
        try:
            amount = format_amount(parse_amount(data["amount"]))
        except MoneyError as exc:
            errs.add("amount", str(exc))
    raw_currency = data.get("currency")
    if raw_currency is None and amount is not None:
        raw_currency = default_currency
        if raw_currency is None:
            errs.add("currency", "is required when an amount is given")
    if raw_currency is not None:
        try:
            currency = normalize_currency(raw_currency)
        except MoneyError as exc:
            errs.add("currency", str(exc))
    return amount, currency


def clean_source(source: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The attribution keys of a contact's first touch (``channel_id``, ``kind``, ``utm_*``)."""
    if not source:
        return None
    picked = {k: source.get(k) for k in SOURCE_KEYS if source.get(k) is not None}
    return picked or None


def _deal_payload(deal: Deal, now: datetime) -> dict[str, Any]:
    return {
        "deal_id": deal.id,
        "pipeline_id": deal.pipeline_id,
        "stage_id": deal.stage_id,
        "status": deal.status,
        "amount": deal.amount,
        "currency": deal.currency,
        "probability": deal.probability,
        "owner_id": deal.owner_id,
        "contact_id": deal.contact_id,
        "company_id": deal.company_id,
        "expected_close": deal.expected_close.isoformat() if deal.expected_close else None,
        "occurred_at": _iso(now),
    }


def create_deal(
    tenant_id: str,
    data: Mapping[str, Any],
    pipeline: Pipeline,
    new_id: IdFactory,
    now: datetime,
    *,
    source: Mapping[str, Any] | None = None,
    loss_reasons: Sequence[str] = (),
    default_currency: str | None = None,
) -> tuple[Deal, list[Event]]:
    """A new deal from ``{"title", "contact_id", "pipeline_id"?, "stage_id"?, "amount"?,
    "currency"?, "owner_id"?, "company_id"?, "probability"?, "expected_close"?, "custom"?,
    "lost_reason"?}`` in ``pipeline`` (the one named by ``pipeline_id``, or the tenant's default).

    ``stage_id`` defaults to the first open stage; created straight into won/lost it is closed at
    ``now`` (lost needs ``lost_reason``). ``amount`` is optional (a deal opened from the inbox has
    none yet); with an amount, ``currency`` is required unless ``default_currency`` is given.
    ``source`` is the contact's first touch. Events: ``deal.created``, then ``deal.won`` or
    ``deal.lost`` when created closed.
    """
    at = as_utc(now)
    errs = _Errors()
    title_problem = _text_error(data.get("title"), TITLE_MAX)
    if title_problem:
        errs.add("title", title_problem)
    contact_id = _opt_id(data.get("contact_id"), "contact_id", errs)
    if contact_id is None and "contact_id" not in errs.items:
        errs.add("contact_id", "is required")
    if data.get("pipeline_id") is not None and data.get("pipeline_id") != pipeline.id:
        errs.add("pipeline_id", "does not match the pipeline given")
    stage = pipeline.first_open_stage
    if data.get("stage_id") is not None:
        found = pipeline.stage(data["stage_id"]) if isinstance(data["stage_id"], str) else None
        if found is None:
            errs.add("stage_id", "is not a stage of this pipeline")
        else:
            stage = found
    amount, currency = _money_fields(data, errs, default_currency)
    override: int | None = None
    if data.get("probability") is not None:
        override = _probability(data["probability"], "probability", errs)
    expected_close = _expected_close(data, errs)
    owner_id = _opt_id(data.get("owner_id"), "owner_id", errs)
    company_id = _opt_id(data.get("company_id"), "company_id", errs)
    custom = data.get("custom")
    if custom is None:
        custom = {}
    elif not isinstance(custom, Mapping):
        errs.add("custom", "must be an object")
        custom = {}
    lost_reason: str | None = None
    if stage.kind == "lost":
        try:
            lost_reason = check_lost_reason(data.get("lost_reason"), loss_reasons)
        except ValidationFailed as exc:
            errs.items.update(exc.errors)
    errs.raise_if_any()
    assert contact_id is not None

    deal = Deal(
        id=new_id(),
        tenant_id=tenant_id,
        title=str(data["title"]).strip(),
        contact_id=contact_id,
        company_id=company_id,
        pipeline_id=pipeline.id,
        stage_id=stage.id,
        status=stage.kind,
        amount=amount,
        currency=currency,
        owner_id=owner_id,
        probability=effective_probability(stage, override),
        probability_override=override,
        expected_close=expected_close,
        source=clean_source(source),
        won_at=at if stage.kind == "won" else None,
        lost_at=at if stage.kind == "lost" else None,
        lost_reason=lost_reason,
        stage_history=(StageVisit(stage.id, at),),
        custom=copy.deepcopy(dict(custom)),
        created_at=at,
        updated_at=at,
    )
    payload = _deal_payload(deal, at)
    payload["source"] = copy.deepcopy(deal.source)
    events = [_event("deal.created", payload)]
    events.extend(_outcome_events(deal, at))
    return deal, events


def _expected_close(data: Mapping[str, Any], errs: _Errors) -> date | None:
    if data.get("expected_close") is None:
        return None
    try:
        return parse_date(data["expected_close"])
    except (ValueError, TypeError):
        errs.add("expected_close", "must be a date, YYYY-MM-DD")
        return None


def _outcome_events(deal: Deal, at: datetime) -> list[Event]:
    if deal.status == "open":
        return []
    payload = _deal_payload(deal, at)
    payload["source"] = copy.deepcopy(deal.source)
    payload["cycle_time_s"] = max(0, int((at - deal.created_at).total_seconds()))
    if deal.status == "won":
        payload["won_at"] = _iso(deal.won_at)
        return [_event("deal.won", payload)]
    payload["lost_at"] = _iso(deal.lost_at)
    payload["lost_reason"] = deal.lost_reason
    return [_event("deal.lost", payload)]


def move(
    deal: Deal,
    pipeline: Pipeline,
    stage_id: str,
    now: datetime,
    lost_reason: str | None = None,
    loss_reasons: Sequence[str] = (),
) -> tuple[Deal, list[Event]]:
    """Move ``deal`` to ``stage_id`` of its ``pipeline``.

    Any stage to any stage of the same pipeline, backwards and out of won/lost included (that
    *reopens* the deal: ``reopen_count`` and ``reopened_at`` record it; leaving won for lost counts
    too, the earlier outcome is withdrawn). A stage of another pipeline → 422 ``stage_id``; into the
    lost stage without a reason, or with one not on the tenant's non-empty ``loss_reasons`` list
    (matched case-insensitively, stored in the list's spelling) → 422 ``lost_reason``. A move to
    the current stage changes nothing and emits nothing.

    Events, in order: ``deal.stage_changed``, then ``deal.reopened`` when leaving won/lost, then
    ``deal.won`` or ``deal.lost`` when entering one.
    """
    at = as_utc(now)
    target = pipeline.stage(stage_id) if deal.pipeline_id == pipeline.id else None
    if target is None:
        raise ValidationFailed({"stage_id": "is not a stage of this deal's pipeline"})
    if target.id == deal.stage_id:
        return deal, []
    reason = check_lost_reason(lost_reason, loss_reasons) if target.kind == "lost" else None

    from_kind: StageKind = deal.status
    current = deal.current_visit
    time_in_stage = max(0, int((at - current.entered_at).total_seconds()))
    history = (*deal.stage_history[:-1], replace(current, left_at=at), StageVisit(target.id, at))
    reopened = from_kind != "open"
    moved = replace(
        deal,
        stage_id=target.id,
        status=target.kind,
        probability=effective_probability(target, deal.probability_override),
        stage_history=history,
        won_at=at if target.kind == "won" else None,
        lost_at=at if target.kind == "lost" else None,
        lost_reason=reason,
        reopened_at=at if reopened else deal.reopened_at,
        reopen_count=deal.reopen_count + (1 if reopened else 0),
        updated_at=at,
    )
    events = [
        _event(
            "deal.stage_changed",
            {
                "deal_id": deal.id,
                "pipeline_id": deal.pipeline_id,
                "from_stage_id": deal.stage_id,
                "to_stage_id": target.id,
                "from_kind": from_kind,
                "to_kind": target.kind,
                "time_in_stage_s": time_in_stage,
                "amount": moved.amount,
                "currency": moved.currency,
                "probability": moved.probability,
                "owner_id": moved.owner_id,
                "contact_id": moved.contact_id,
                "occurred_at": _iso(at),
                "reopened": reopened,
            },
        )
    ]
    if reopened:
        events.append(
            _event(
                "deal.reopened",
                {
                    "deal_id": deal.id,
                    "pipeline_id": deal.pipeline_id,
                    "from_stage_id": deal.stage_id,
                    "to_stage_id": target.id,
                    "previous_status": from_kind,
                    "amount": moved.amount,
                    "currency": moved.currency,
                    "owner_id": moved.owner_id,
                    "contact_id": moved.contact_id,
                    "occurred_at": _iso(at),
                },
            )
        )
    events.extend(_outcome_events(moved, at))
    return moved, events


def update_deal(
    deal: Deal,
    pipeline: Pipeline,
    patch: Mapping[str, Any],
    now: datetime,
    *,
    loss_reasons: Sequence[str] = (),
) -> tuple[Deal, list[Event]]:
    """Apply a PATCH: ``title``, ``amount``, ``currency``, ``owner_id``, ``company_id``,
    ``contact_id``, ``expected_close``, ``probability`` (``null`` = follow the stage again),
    ``custom`` (replaced whole), and ``stage_id`` (+ ``lost_reason``), which is a :func:`move`;
    ``lost_reason`` alone corrects the reason of a lost deal.

    ``pipeline_id`` may be sent only unchanged (moving between pipelines is not supported).
    Unknown fields → 422. Events: ``deal.updated`` (``changed`` = the field names, no values of
    personal data), then any events of the move.
    """
    at = as_utc(now)
    allowed = {
        "title", "amount", "currency", "owner_id", "company_id", "contact_id", "expected_close",
        "probability", "custom", "stage_id", "lost_reason", "pipeline_id",
    }  # fmt: skip
    errs = _Errors()
    for key in patch:
        if key not in allowed:
            errs.add(key, "is not a field that can be changed")
    if "pipeline_id" in patch and patch["pipeline_id"] != deal.pipeline_id:
        errs.add("pipeline_id", "a deal cannot change pipeline; create it in the other one")
    changes: dict[str, Any] = {}
    if "title" in patch:
        problem = _text_error(patch["title"], TITLE_MAX)
        if problem:
            errs.add("title", problem)
        else:
            changes["title"] = str(patch["title"]).strip()
    if "contact_id" in patch:
        contact_id = _opt_id(patch["contact_id"], "contact_id", errs)
        if contact_id is None and "contact_id" not in errs.items:
            errs.add("contact_id", "is required")
        elif contact_id is not None:
            changes["contact_id"] = contact_id
    for key in ("owner_id", "company_id"):
        if key in patch:
            value = _opt_id(patch[key], key, errs)
            if key not in errs.items:
                changes[key] = value
    if "amount" in patch or "currency" in patch:
        merged = {
            "amount": patch.get("amount", deal.amount),
            "currency": patch.get("currency", deal.currency),
        }
        amount, currency = _money_fields(merged, errs, None)
        if "amount" not in errs.items and "currency" not in errs.items:
            changes["amount"] = amount
            changes["currency"] = currency
    if "expected_close" in patch:
        close = _expected_close(patch, errs)
        if "expected_close" not in errs.items:
            changes["expected_close"] = close
    if "probability" in patch:
        override = (
            None if patch["probability"] is None else _probability(patch["probability"], "probability", errs)
        )
        if "probability" not in errs.items:
            changes["probability_override"] = override
    if "custom" in patch:
        custom = patch["custom"] if patch["custom"] is not None else {}
        if not isinstance(custom, Mapping):
            errs.add("custom", "must be an object")
        else:
            changes["custom"] = copy.deepcopy(dict(custom))
    if "stage_id" in patch and (
        not isinstance(patch["stage_id"], str) or pipeline.stage(patch["stage_id"]) is None
    ):
        errs.add("stage_id", "is not a stage of this deal's pipeline")
    if "lost_reason" in patch and "stage_id" not in patch:
        if deal.status != "lost":
            errs.add("lost_reason", "only a lost deal, or a move to the lost stage, takes a reason")
        else:
            try:
                changes["lost_reason"] = check_lost_reason(patch["lost_reason"], loss_reasons)
            except ValidationFailed as exc:
                errs.items.update(exc.errors)
    errs.raise_if_any()

    changed = sorted(k for k, v in changes.items() if getattr(deal, k) != v)
    updated = replace(deal, **{k: changes[k] for k in changed})
    events: list[Event] = []
    if changed:
        stage = pipeline.stage(updated.stage_id)
        if stage is not None:
            updated = replace(updated, probability=effective_probability(stage, updated.probability_override))
        updated = replace(updated, updated_at=at)
        payload = _deal_payload(updated, at)
        payload["changed"] = ["probability" if k == "probability_override" else k for k in changed]
        payload["expected_close"] = updated.expected_close.isoformat() if updated.expected_close else None
        events.append(_event("deal.updated", payload))
    if "stage_id" in patch:
        updated, move_events = move(
            updated, pipeline, patch["stage_id"], at, patch.get("lost_reason"), loss_reasons
        )
        events.extend(move_events)
    return updated, events


def sync_probability(deal: Deal, pipeline: Pipeline, now: datetime) -> tuple[Deal, list[Event]]:
    """Recompute the effective probability after the pipeline's stage probabilities were edited."""
    stage = pipeline.stage(deal.stage_id)
    if stage is None:
        return deal, []
    probability = effective_probability(stage, deal.probability_override)
    if probability == deal.probability:
        return deal, []
    at = as_utc(now)
    updated = replace(deal, probability=probability, updated_at=at)
    payload = _deal_payload(updated, at)
    payload["changed"] = ["probability"]
    return updated, [_event("deal.updated", payload)]


def pick_next_action(tasks: Iterable[Mapping[str, Any]]) -> NextAction | None:
    """The earliest-due open task (``{"id"|"task_id", "title", "due_at", "status"?}``), or ``None``.

    Tasks whose ``status`` is anything but ``open``/``overdue`` are skipped; ties go to the
    smaller id, so the choice is stable.
    """
    best: NextAction | None = None
    for task in tasks:
        if task.get("status", "open") not in ("open", "overdue") or task.get("due_at") is None:
            continue
        candidate = NextAction(
            task_id=str(task.get("task_id", task.get("id"))),
            title=str(task.get("title") or ""),
            due_at=parse_datetime(task["due_at"]),
        )
        if best is None or (candidate.due_at, candidate.task_id) < (best.due_at, best.task_id):
            best = candidate
    return best


def set_next_action(deal: Deal, next_action: NextAction | None, now: datetime) -> tuple[Deal, list[Event]]:
    """Record the deal's next action (see :func:`pick_next_action`); no events."""
    if deal.next_action == next_action:
        return deal, []
    return replace(deal, next_action=next_action, updated_at=as_utc(now)), []


def repoint_contact(
    deal: Deal, old_contact_id: str, new_contact_id: str, now: datetime
) -> tuple[Deal, list[Event]]:
    """After contacts merged ``old`` into ``new``: a deal of ``old`` now belongs to ``new``.

    Unchanged (and no event) for deals of other contacts, so replaying the merge is harmless.
    Event: ``deal.updated`` with ``changed == ["contact_id"]``.
    """
    if deal.contact_id != old_contact_id or old_contact_id == new_contact_id:
        return deal, []
    at = as_utc(now)
    updated = replace(deal, contact_id=new_contact_id, updated_at=at)
    payload = _deal_payload(updated, at)
    payload["changed"] = ["contact_id"]
    payload["previous_contact_id"] = old_contact_id
    return updated, [_event("deal.updated", payload)]


def attribute_source(deal: Deal, source: Mapping[str, Any] | None, now: datetime) -> tuple[Deal, list[Event]]:
    """Fill in the first-touch attribution of a deal created before its contact's source was known.

    Only a deal without a source takes one (attribution is never rewritten), and an empty source
    changes nothing. Event: ``deal.updated`` with ``changed == ["source"]`` and the ``source``.
    """
    picked = clean_source(source)
    if deal.source is not None or picked is None:
        return deal, []
    at = as_utc(now)
    updated = replace(deal, source=picked, updated_at=at)
    payload = _deal_payload(updated, at)
    payload["changed"] = ["source"]
    payload["source"] = copy.deepcopy(picked)
    return updated, [_event("deal.updated", payload)]


def erase_personal_data(deal: Deal, now: datetime) -> tuple[Deal, list[Event]]:
    """GDPR erasure of the deal's contact: the title becomes ``"Erased"``, custom fields and the
    next action's title are cleared; ids, money, stages and dates stay so aggregates keep counting.
    Idempotent: an erased deal is returned unchanged. Event: ``deal.erased``.
    """
    if deal.erased:
        return deal, []
    at = as_utc(now)
    next_action = replace(deal.next_action, title="") if deal.next_action else None
    updated = replace(
        deal, title=ERASED_TITLE, custom={}, next_action=next_action, erased=True, updated_at=at
    )
    return updated, [
        _event(
            "deal.erased",
            {"deal_id": deal.id, "contact_id": deal.contact_id, "occurred_at": _iso(at)},
        )
    ]


def import_deal(
    tenant_id: str,
    data: Mapping[str, Any],
    pipeline: Pipeline,
    new_id: IdFactory,
    now: datetime,
    *,
    source: Mapping[str, Any] | None = None,
    loss_reasons: Sequence[str] = (),
    default_currency: str | None = None,
) -> tuple[Deal, list[Event]]:
    """A historical deal: the fields of :func:`create_deal` plus ``stage_history``:
    ``[{"stage_id" | "stage": <name>, "entered_at", "lost_reason"?}]`` oldest first, and an optional
    ``created_at`` (default: the first ``entered_at``).

    The history is replayed: the deal is created at the first entry and moved at each later one, so
    ``left_at`` is the next entry's ``entered_at``, the last entry is current, the status, won/lost
    dates and reopenings follow, and the events are those the moves would have emitted, with their
    historical ``occurred_at`` and ``"imported": true`` (consecutive entries for the same stage are
    merged). A lost entry takes its own ``lost_reason``, else the top-level one; ``loss_reasons``
    applies to them like to a live move (pass ``()`` to accept historical text as written).
    Timestamps without an offset are UTC; entries must not go back in time nor lie after ``now``.
    ``updated_at`` is ``now``.
    """
    at = as_utc(now)
    errs = _Errors()
    raw = data.get("stage_history")
    entries: list[tuple[Stage, datetime, Any]] = []
    if not isinstance(raw, list) or not raw:
        errs.add("stage_history", "must be a non-empty list of {stage_id or stage, entered_at}")
        raw = []
    previous: datetime | None = None
    for i, item in enumerate(raw):
        path = f"stage_history.{i}"
        if not isinstance(item, Mapping):
            errs.add(path, "must be an object {stage_id or stage, entered_at}")
            continue
        stage: Stage | None = None
        if item.get("stage_id") is not None:
            stage = pipeline.stage(item["stage_id"]) if isinstance(item["stage_id"], str) else None
            if stage is None:
                errs.add(f"{path}.stage_id", "is not a stage of this pipeline")
        elif isinstance(item.get("stage"), str):
            stage = pipeline.stage_by_name(item["stage"])
            if stage is None:
                errs.add(f"{path}.stage", "no stage of this pipeline has this name")
        else:
            errs.add(f"{path}.stage_id", "is required (or the stage's name as stage)")
        try:
            entered = parse_datetime(item.get("entered_at"))
        except (ValueError, TypeError):
            errs.add(f"{path}.entered_at", "must be an ISO 8601 timestamp")
            continue
        if entered > at:
            errs.add(f"{path}.entered_at", "lies in the future")
        if previous is not None and entered < previous:
            errs.add(f"{path}.entered_at", "is earlier than the previous entry")
        previous = entered
        if stage is not None:
            if stage.kind == "lost":
                reason = item.get("lost_reason", data.get("lost_reason"))
                try:
                    reason = check_lost_reason(reason, loss_reasons, f"{path}.lost_reason")
                except ValidationFailed as exc:
                    errs.items.update(exc.errors)
            else:
                reason = None
            if not entries or entries[-1][0].id != stage.id:
                entries.append((stage, entered, reason))
    created_at: datetime | None = None
    if data.get("created_at") is not None:
        try:
            created_at = parse_datetime(data["created_at"])
        except (ValueError, TypeError):
            errs.add("created_at", "must be an ISO 8601 timestamp")
    if created_at is not None and entries and created_at > entries[0][1]:
        errs.add("created_at", "is later than the first stage entry")
    if data.get("stage_id") is not None and entries and data["stage_id"] != entries[-1][0].id:
        errs.add("stage_id", "differs from the last stage of stage_history")
    errs.raise_if_any()

    first_stage, first_at, first_reason = entries[0]
    create_data = {k: v for k, v in data.items() if k not in ("stage_history", "created_at", "lost_reason")}
    create_data["stage_id"] = first_stage.id
    create_data["lost_reason"] = first_reason
    deal, events = create_deal(
        tenant_id,
        create_data,
        pipeline,
        new_id,
        first_at,
        source=source,
        loss_reasons=(),
        default_currency=default_currency,
    )
    if created_at is not None and created_at < first_at:
        deal = replace(deal, created_at=created_at)
        events[0]["payload"]["occurred_at"] = _iso(created_at)
    for stage, entered, reason in entries[1:]:
        deal, more = move(deal, pipeline, stage.id, entered, reason, ())
        events.extend(more)
    for event in events:
        event["payload"]["imported"] = True
    return replace(deal, imported=True, updated_at=at), events
