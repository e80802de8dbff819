"""What the tasks service's handlers share: constants, conversions of stored documents, and the
helpers every behaviour uses (the visible task, one change of a task with its events).

The handlers are grouped by behaviour in mixins (``scheduler.py``, ``tasks.py``, ``rules.py``,
``events.py``); :class:`services.tasks.service.TasksService` combines them with its table.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from pymongo import ASCENDING

from services.common.access import must, read_filter, write_filter
from services.tasks import domain as d
from services.tasks import rules as r
from shared.crypto import SecretBox
from shared.errors import Conflict, ValidationFailed
from shared.events import Envelope
from shared.mongo import UnitOfWork
from shared.netguard import UrlGuard, UrlRefused
from shared.service import Service

log = logging.getLogger(__name__)

CONSUMER_RULES = "tasks.rules"
CONSUMER_USERS = "tasks.users"
CONSUMER_MERGED = "tasks.contact_merged"
CONSUMER_ERASED = "tasks.contact_erased"

RULE_EVENT_TYPES: tuple[str, ...] = (
    "interaction.recorded",
    "inbox.call_missed",
    "contact.created",
    "deal.created",
    "deal.stage_changed",
    "deal.won",
    "deal.lost",
)
"""Event types automation rules may name (the service subscribes to each)."""

RULE_COMMANDS: dict[str, str] = {
    "assign_owner": "rule.assign_owner_requested",
    "move_deal": "rule.move_deal_requested",
    "webhook": "rule.webhook_requested",
}
"""Command events for the actions other services carry out."""

ERASED_TITLE = "(erased)"
CALENDAR_HORIZON = 2000
"""At most this many open tasks in one calendar feed."""
WORKLOAD_SCAN_LIMIT = 100_000
BULK_LIMIT = 5000


def _utc_iso(value: datetime) -> str:
    return d._utc(value).isoformat()


def _view(task: d.Task, now: datetime) -> dict[str, Any]:
    """The public task: the domain view plus when its notices went out."""
    view = task.to_view(now)
    view["reminder_sent_at"] = task.reminder_sent_at.isoformat() if task.reminder_sent_at else None
    view["overdue_sent_at"] = task.overdue_sent_at.isoformat() if task.overdue_sent_at else None
    return view


def _as_stored(task: d.Task) -> d.Task:
    """The task as MongoDB keeps it (datetimes to the millisecond), so the answer of a write
    equals what a later read returns."""
    changes: dict[str, Any] = {
        f.name: v.replace(microsecond=v.microsecond // 1000 * 1000)
        for f in dataclasses.fields(task)
        if isinstance(v := getattr(task, f.name), datetime)
    }
    return dataclasses.replace(task, **changes)


def _version_key(task: d.Task) -> Callable[[Mapping[str, Any]], str]:
    """Idempotency keys of a task's events: one per event type and task version."""
    return lambda ev: f"{ev['event_type']}:{task.id}:v{task.version}"


_RULES_IN_TRANSACTION: weakref.WeakKeyDictionary[Any, dict[str, list[r.Rule]]] = weakref.WeakKeyDictionary()
"""Rules read in a transaction, by its session (gone with the session)."""


class TasksBase(Service):
    name = "tasks"
    scheduler_batch: ClassVar[int] = 200

    # ---- stored settings and custom rules ----

    async def _settings(self, tenant: str, session: Any = None) -> dict[str, Any]:
        return await self.db.settings.find_one({"_id": tenant}, session=session) or {}

    async def _custom_rules(self, tenant: str, session: Any = None) -> list[r.Rule]:
        """The tenant's own rules, oldest first. Inside a transaction they are read once: the
        events of one consumer batch share its session and see the same snapshot anyway, and rules
        change only through the RPC methods, never in a consumer's transaction."""
        if session is not None and session.in_transaction:
            memo = _RULES_IN_TRANSACTION.setdefault(session, {})
            if tenant not in memo:
                memo[tenant] = await self._read_rules(tenant, session)
            return memo[tenant]
        return await self._read_rules(tenant, session)

    async def _read_rules(self, tenant: str, session: Any) -> list[r.Rule]:
        docs = (
            await self.db.rules.find({"tenant_id": tenant}, session=session)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .to_list(length=1000)
        )
        return [_rule_from_doc(doc) for doc in docs]

    # ---- helpers ----------------------------------------------------------------------------

    async def _visible_task(self, ctx: dict[str, Any], task_id: str) -> d.Task:
        doc = must(await self.db.tasks.find_one({**read_filter(ctx, "assignee_id"), "_id": task_id}), "task")
        return d.Task.from_doc(doc)

    async def _change(
        self,
        ctx: dict[str, Any],
        task_id: str,
        change: Callable[[d.Task, datetime], tuple[d.Task, list[d.Event]]],
    ) -> dict[str, Any]:
        """Read-modify-write one task with optimistic concurrency on ``version`` (the scheduler's
        claims bump it too), emitting the domain events in the same transaction."""
        wf = write_filter(ctx, "assignee_id")
        for _ in range(5):
            doc = must(await self.db.tasks.find_one({**wf, "_id": task_id}), "task")
            old = d.Task.from_doc(doc)
            box: dict[str, d.Task] = {}

            async def unit(uow: UnitOfWork, old: d.Task = old, box: dict[str, d.Task] = box) -> bool:
                new, events = change(old, uow.now)
                box["task"] = new
                if not events:
                    return True
                res = await uow.db.tasks.update_one(
                    {"_id": old.id, "tenant_id": old.tenant_id, "version": old.version},
                    {"$set": {k: v for k, v in new.to_doc().items() if k != "_id"}},
                    session=uow.session,
                )
                if res.matched_count == 0:
                    return False
                uow.emit_all(old.tenant_id, events, key_of=_version_key(new))
                return True

            if await self.store.atomic(unit):
                return _view(_as_stored(box["task"]), self.clock.now())
        raise Conflict("The task changed meanwhile; try again.", code="task_busy")


def _parse_when(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        return d._utc(value)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed({field: "must be an ISO 8601 date-time"}) from exc
    if parsed.tzinfo is None:
        raise ValidationFailed({field: "must carry a UTC offset"})
    return d._utc(parsed)


def _event_time(env: Envelope) -> datetime:
    """When the fact happened (a call's start, not when we processed it): due offsets count from
    it, so a redelivery computes the same due time."""
    raw = env.payload.get("occurred_at")
    if raw:
        try:
            return _parse_when(raw, "occurred_at")
        except ValidationFailed:
            pass
    return d._utc(env.occurred_at)


def _dedupe_key(env: Envelope) -> str:
    """What makes two events "the same trigger" for a rule action: an interaction is acted on once
    (contacts re-records a call when it ends; a twin capture of one call must not double the
    task); a contact is created once; every other event by its own id."""
    if env.event_type == "interaction.recorded" and env.payload.get("interaction_id"):
        return f"interaction:{env.payload['interaction_id']}"
    if env.event_type == "contact.created" and env.payload.get("contact_id"):
        return f"contact:{env.payload['contact_id']}"
    if env.event_type == "inbox.call_missed" and env.payload.get("item_id"):
        return f"inbox:{env.payload['item_id']}"
    return env.event_id


def _check_event_type(rule: r.Rule) -> None:
    if rule.event_type not in RULE_EVENT_TYPES:
        raise ValidationFailed({"event_type": "must be one of " + ", ".join(RULE_EVENT_TYPES)})


async def _check_webhook_urls(rule: r.Rule, guard: UrlGuard) -> None:
    """A ``webhook`` action's URL passes the outbound guard (checked again at delivery)."""
    errors: dict[str, str] = {}
    for idx, spec in enumerate(rule.actions):
        if isinstance(spec, r.WebhookSpec):
            try:
                await guard.validate(spec.url)
            except UrlRefused as exc:
                errors[f"actions.{idx}.url"] = str(exc)
    if errors:
        raise ValidationFailed(errors)


def _seal_webhook_secrets(rule: r.Rule, box: SecretBox, previous: r.Rule | None) -> r.Rule:
    """Every ``webhook`` action carries a secret (422 ``actions.<i>.secret`` else), stored sealed.
    On an update, an action that names no secret keeps the one of the earlier action with its URL."""
    kept = {
        a.url: a.secret
        for a in (previous.actions if previous else [])
        if isinstance(a, r.WebhookSpec) and a.secret
    }
    actions: list[Any] = []
    errors: dict[str, str] = {}
    for idx, spec in enumerate(rule.actions):
        if isinstance(spec, r.WebhookSpec):
            secret = spec.secret
            if secret is None:
                secret = kept.get(spec.url)
            elif not secret.startswith(r.SEALED):
                secret = r.SEALED + box.seal({"secret": secret})
            elif secret != kept.get(spec.url):
                secret = None  # a sealed value is only ever the hub's own
            if secret is None:
                errors[f"actions.{idx}.secret"] = "is required: it signs the deliveries"
            spec = spec.model_copy(update={"secret": secret})
        actions.append(spec)
    if errors:
        raise ValidationFailed(errors)
    return rule.model_copy(update={"actions": actions})


def _rule_to_doc(rule: r.Rule, tenant: str) -> dict[str, Any]:
    doc = rule.model_dump(mode="json")
    doc["rule_id"] = doc.pop("id")
    doc["_id"] = f"{tenant}:{rule.id}"
    doc["tenant_id"] = tenant
    return doc


def _rule_from_doc(doc: Mapping[str, Any]) -> r.Rule:
    data = {k: doc[k] for k in r.Rule.model_fields if k in doc and k != "id"}
    data["id"] = doc["rule_id"]
    return r.Rule.model_validate(data)


def _parse_stage_tasks(value: Any) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """``{stage_id: [{title, kind?, due_in_s?, assignee?, remind_before_s?}]}`` validated."""
    if not isinstance(value, Mapping):
        return {}, {"stage_tasks": "must be an object of stage id → list of task templates"}
    out: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    for stage_id, templates in value.items():
        if not isinstance(templates, list) or len(templates) > 20:
            errors[f"stage_tasks.{stage_id}"] = "must be a list of at most 20 task templates"
            continue
        out[str(stage_id)] = []
        for i, tpl in enumerate(templates):
            try:
                st = r.parse_stage_task(tpl if isinstance(tpl, Mapping) else {})
            except d.ValidationFailed as exc:
                for k, msg in exc.errors.items():
                    errors[f"stage_tasks.{stage_id}.{i}.{k}"] = msg
                continue
            out[str(stage_id)].append(
                {
                    "title": st.title,
                    "kind": st.kind,
                    "due_in_s": st.due_in_s,
                    "assignee": st.assignee,
                    "remind_before_s": st.remind_before_s,
                }
            )
    return out, errors
