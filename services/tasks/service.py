"""The tasks service: tasks, reminders, automation rules, workload and the calendar feed.

Collections (database ``<ns>_tasks``):

* ``tasks`` — :meth:`Task.to_doc` documents plus ``rule_key`` (``<tenant>:<action key>``) on tasks
  made by an automation rule (unique: a redelivered or duplicated event makes one task);
* ``rules`` — the tenant's custom rules (``_id`` ``<tenant>:<rule id>``);
* ``settings`` — per tenant (``_id`` = tenant id): ``disabled_rules``, ``stage_tasks``
  (stage id → task templates), ``round_robin`` counters;
* ``users`` — learned from ``user.changed`` (workload rows).

The scheduler (:meth:`TasksService.scheduler_pass`) claims due reminders and overdue notices with
one atomic ``find_one_and_update`` inside a transaction that also writes the event to the outbox,
so with several replicas each notice goes out exactly once, and one due while every replica was
down goes out when one comes back.

Events consumed: ``interaction.recorded``, ``contact.created``, ``deal.stage_changed`` (+ the
other types in :data:`RULE_EVENT_TYPES`) for automation rules; ``user.changed``;
``contact.merged``; ``contact.erased``.
Events emitted: ``task.created|updated|completed|canceled|reassigned|reminder_due|overdue`` and
the rule commands ``rule.assign_owner_requested``, ``rule.move_deal_requested``,
``rule.webhook_requested`` (consumed by contacts, deals and the gateway's webhook delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.common.access import must, read_filter, require_admin, tenant_of, write_filter
from services.tasks import domain as d
from services.tasks import rules as r
from services.tasks.calendar import render_calendar
from shared.clock import new_id
from shared.crypto import SecretBox
from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed
from shared.events import Envelope
from shared.mongo import UnitOfWork
from shared.netguard import UrlGuard, UrlRefused
from shared.pagination import clamp_limit, decode_cursor, page
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


class TasksService(Service):
    name = "tasks"
    scheduler_batch: ClassVar[int] = 200

    indexes: ClassVar = {
        "tasks": [
            IndexModel(
                [
                    ("tenant_id", ASCENDING),
                    ("assignee_id", ASCENDING),
                    ("status", ASCENDING),
                    ("due_at", ASCENDING),
                ]
            ),
            IndexModel([("tenant_id", ASCENDING), ("due_at", ASCENDING), ("_id", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("contact_id", ASCENDING)]),
            IndexModel([("status", ASCENDING), ("reminder_sent_at", ASCENDING), ("remind_at", ASCENDING)]),
            IndexModel([("status", ASCENDING), ("overdue_sent_at", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("rule_key", ASCENDING)], unique=True, sparse=True),
        ],
        "rules": [IndexModel([("tenant_id", ASCENDING), ("created_at", ASCENDING)])],
        "users": [IndexModel([("tenant_id", ASCENDING), ("user_id", ASCENDING)])],
    }

    def setup(self) -> None:
        self._scheduler: asyncio.Task[None] | None = None
        for event_type in RULE_EVENT_TYPES:
            self.on(event_type, self.on_rule_event)
        self.on("user.changed", self.on_user_changed)
        self.on("contact.merged", self.on_contact_merged)
        self.on("contact.erased", self.on_contact_erased)
        for name in (
            "create_task",
            "list_tasks",
            "get_task",
            "update_task",
            "complete_task",
            "cancel_task",
            "reassign_tasks",
            "workload",
            "calendar",
            "export_contact",
            "list_rules",
            "get_rule",
            "create_rule",
            "update_rule",
            "delete_rule",
        ):
            self.rpc.method(name)(getattr(self, name))

    # ---- lifecycle --------------------------------------------------------------------------

    async def on_start(self) -> None:
        interval = float(self.settings.tasks_scheduler_s)

        async def loop() -> None:
            while True:
                try:
                    await self.scheduler_pass()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("task scheduler pass failed", exc_info=True)
                await asyncio.sleep(interval)

        self._scheduler = asyncio.create_task(loop(), name="tasks-scheduler")

    async def on_stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._scheduler
            self._scheduler = None

    # ---- scheduler --------------------------------------------------------------------------

    async def scheduler_pass(self) -> dict[str, int]:
        """Claim and announce every reminder and overdue notice due now; safe to run on several
        replicas at once (each claim is one atomic update in the transaction that emits)."""
        counts = {"reminders": 0, "overdue": 0}
        for _ in range(self.scheduler_batch):
            if not await self.store.atomic(self._claim_reminder):
                break
            counts["reminders"] += 1
        for _ in range(self.scheduler_batch):
            if not await self.store.atomic(self._claim_overdue):
                break
            counts["overdue"] += 1
        if counts["reminders"] or counts["overdue"]:
            log.info("task notices sent", extra=counts)
        return counts

    async def _claim_reminder(self, uow: UnitOfWork) -> bool:
        doc = await uow.db.tasks.find_one_and_update(
            d.reminder_claim_filter(uow.now),
            d.reminder_claim_update(uow.now),
            sort=[("remind_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
            session=uow.session,
        )
        if doc is None:
            return False
        task = d.Task.from_doc(doc)
        ev = d.reminder_due_event(task)
        stamp = _utc_iso(task.remind_at) if task.remind_at else ""
        uow.emit(
            ev["event_type"], task.tenant_id, ev["payload"], idempotency_key=f"reminder:{task.id}:{stamp}"
        )
        return True

    async def _claim_overdue(self, uow: UnitOfWork) -> bool:
        doc = await uow.db.tasks.find_one_and_update(
            d.overdue_claim_filter(uow.now),
            d.overdue_claim_update(uow.now),
            sort=[("due_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
            session=uow.session,
        )
        if doc is None:
            return False
        task = d.Task.from_doc(doc)
        ev = d.overdue_event(task)
        uow.emit(
            ev["event_type"],
            task.tenant_id,
            ev["payload"],
            idempotency_key=f"overdue:{task.id}:{_utc_iso(task.due_at)}",
        )
        return True

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

    # ---- task RPC ---------------------------------------------------------------------------

    async def create_task(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        wf = write_filter(ctx, "assignee_id")
        tenant = wf["tenant_id"]
        body = dict(args.get("body") or {})
        if ctx.get("role") != "admin":
            body.setdefault("assignee_id", ctx.get("user_id"))
            if body.get("assignee_id") not in (ctx.get("user_id"), None):
                raise ValidationFailed({"assignee_id": "a manager may only create tasks for itself"})

        async def unit(uow: UnitOfWork) -> d.Task:
            task, events = d.create_task(
                body, task_id=new_id(), tenant_id=tenant, now=uow.now, created_by=ctx.get("user_id")
            )
            await uow.db.tasks.insert_one(task.to_doc(), session=uow.session)
            uow.emit_all(tenant, events, key_of=_version_key(task))
            return task

        task = await self.store.atomic(unit)
        return _view(_as_stored(task), self.clock.now())

    async def get_task(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return _view(await self._visible_task(ctx, str(args["task_id"])), self.clock.now())

    async def list_tasks(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Tasks by due time (earliest first), then id. Filters: ``assignee_id``, ``contact_id``,
        ``deal_id``, ``status`` (open|done|canceled|overdue), ``due_before`` (ISO, exclusive)."""
        limit = clamp_limit(args.get("limit"))
        filters = args.get("filters") or {}
        now = self.clock.now()
        clauses: list[dict[str, Any]] = [read_filter(ctx, "assignee_id")]
        for key in ("assignee_id", "contact_id", "deal_id"):
            if filters.get(key):
                clauses.append({key: filters[key]})
        if filters.get("status"):
            clauses.append(d.status_filter(filters["status"], now))
        if filters.get("due_before"):
            clauses.append({"due_at": {"$lt": _parse_when(filters["due_before"], "due_before")}})
        after = decode_cursor(args.get("cursor"))
        if after:
            if len(after) != 2:
                raise ValidationFailed({"cursor": "is not a cursor this API issued"})
            at = _parse_when(after[0], "cursor")
            clauses.append({"$or": [{"due_at": {"$gt": at}}, {"due_at": at, "_id": {"$gt": str(after[1])}}]})
        flt = clauses[0] if len(clauses) == 1 else {"$and": clauses}
        docs = (
            await self.db.tasks.find(flt)
            .sort([("due_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit + 1)
            .to_list(length=limit + 1)
        )
        items = [_view(d.Task.from_doc(doc), now) for doc in docs]
        return page(items, limit, lambda it: [it["due_at"], it["id"]])

    async def update_task(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        changes = dict(args.get("changes") or {})
        d.parse_model(d.TaskPatch, changes)  # 422 before any lookup
        return await self._change(ctx, str(args["task_id"]), lambda t, now: d.update_task(t, changes, now))

    async def complete_task(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        body = dict(args.get("body") or {})
        d.parse_model(d.TaskComplete, body)
        return await self._change(ctx, str(args["task_id"]), lambda t, now: d.complete_task(t, body, now))

    async def cancel_task(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return await self._change(ctx, str(args["task_id"]), d.cancel_task)

    async def reassign_tasks(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Every open task of ``from_user_id`` (or only ``task_ids``) to ``to_user_id``. Admins may
        move anyone's tasks; a manager only its own."""
        tenant = write_filter(ctx, "assignee_id")["tenant_id"]
        body = dict(args.get("body") or {})
        cmd = d.parse_model(d.TaskReassign, body)
        if ctx.get("role") != "admin" and cmd.from_user_id != ctx.get("user_id"):
            raise Forbidden("A manager may only hand over its own tasks.")
        flt = {**d.bulk_reassign_filter(cmd), "tenant_id": tenant}
        docs = await self.db.tasks.find(flt).to_list(length=BULK_LIMIT)
        tasks = [d.Task.from_doc(doc) for doc in docs]

        async def unit(uow: UnitOfWork) -> list[str]:
            changed, _ = d.bulk_reassign(tasks, cmd, uow.now)
            by_id = {t.id: t for t in tasks}
            moved: list[str] = []
            for new in changed:
                old = by_id[new.id]
                res = await uow.db.tasks.update_one(
                    {"_id": new.id, "tenant_id": tenant, "version": old.version, "status": "open"},
                    {"$set": {k: v for k, v in new.to_doc().items() if k != "_id"}},
                    session=uow.session,
                )
                if res.matched_count:
                    _, events = d.reassign_task(old, cmd.to_user_id, uow.now)
                    uow.emit_all(tenant, events, key_of=_version_key(new))
                    moved.append(new.id)
            return moved

        moved = await self.store.atomic(unit)
        return {"reassigned": len(moved), "task_ids": moved}

    async def workload(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Per user: open (overdue included), overdue, due today (tenant time zone)."""
        flt = {**read_filter(ctx, "assignee_id"), "status": "open"}
        tenant = flt["tenant_id"]
        docs = await self.db.tasks.find(flt).to_list(length=WORKLOAD_SCAN_LIMIT)
        limited = "assignee_id" in flt
        users = (
            await self.db.users.find({"tenant_id": tenant, "active": True}).sort("user_id", 1).to_list(10_000)
        )
        known = {u["user_id"]: u for u in users}
        if limited:
            ids = [str(ctx.get("user_id"))]
        else:
            ids = [u["user_id"] for u in users if u.get("role") != "viewer"]
        tz = (ctx.get("settings") or {}).get("timezone") or d.DEFAULT_TZ
        now = self.clock.now()
        rows = d.workload([d.Task.from_doc(doc) for doc in docs], ids, now, tz)
        for row in rows:
            user = known.get(row["user_id"], {})
            row["name"] = user.get("name")
            row["role"] = user.get("role")
        return {"items": rows, "timezone": tz, "as_of": now.isoformat()}

    async def calendar(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """The caller's open tasks as iCalendar text (the gateway resolves the feed token)."""
        tenant = tenant_of(ctx)
        user_id = str(ctx.get("user_id") or "")
        if not user_id:
            raise NotFound("calendar")
        docs = (
            await self.db.tasks.find({"tenant_id": tenant, "assignee_id": user_id, "status": "open"})
            .sort("due_at", ASCENDING)
            .limit(CALENDAR_HORIZON)
            .to_list(length=CALENDAR_HORIZON)
        )
        body = render_calendar(user_id, [d.Task.from_doc(doc) for doc in docs], self.clock.now())
        return {"ics": body.decode("utf-8")}

    async def export_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """GDPR export: the tasks about ``contact_id``."""
        flt = {**read_filter(ctx, "assignee_id"), "contact_id": str(args["contact_id"])}
        docs = await self.db.tasks.find(flt).sort("due_at", ASCENDING).to_list(length=10_000)
        now = self.clock.now()
        return {"tasks": [_view(d.Task.from_doc(doc), now) for doc in docs]}

    # ---- automation rules RPC ---------------------------------------------------------------

    async def _settings(self, tenant: str, session: Any = None) -> dict[str, Any]:
        return await self.db.settings.find_one({"_id": tenant}, session=session) or {}

    async def _custom_rules(self, tenant: str, session: Any = None) -> list[r.Rule]:
        docs = (
            await self.db.rules.find({"tenant_id": tenant}, session=session)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .to_list(length=1000)
        )
        return [_rule_from_doc(doc) for doc in docs]

    @staticmethod
    def _rule_view(rule: r.Rule, settings: Mapping[str, Any]) -> dict[str, Any]:
        view = rule.model_dump(mode="json")
        for action in view.get("actions") or []:
            if action.get("type") == "webhook":  # write-only
                action["secret_set"] = bool(action.pop("secret", None))
        if rule.builtin:
            view["enabled"] = rule.id not in (settings.get("disabled_rules") or [])
        if rule.id == r.STAGE_TASKS:
            view["stage_tasks"] = settings.get("stage_tasks") or {}
        return view

    async def list_rules(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Built-in rules (with their on/off state), then the tenant's own."""
        tenant = read_filter(ctx)["tenant_id"]
        settings = await self._settings(tenant)
        rules = [*r.default_rules(), *await self._custom_rules(tenant)]
        return {"items": [self._rule_view(x, settings) for x in rules], "next_cursor": None}

    async def get_rule(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        tenant = read_filter(ctx)["tenant_id"]
        rule_id = str(args["rule_id"])
        settings = await self._settings(tenant)
        for builtin in r.default_rules():
            if builtin.id == rule_id:
                return self._rule_view(builtin, settings)
        doc = must(await self.db.rules.find_one({"_id": f"{tenant}:{rule_id}", "tenant_id": tenant}), "rule")
        return self._rule_view(_rule_from_doc(doc), settings)

    async def create_rule(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        body = dict(args.get("body") or {})
        body.setdefault("id", new_id())
        rule = r.parse_rule(body)
        _check_event_type(rule)
        await _check_webhook_urls(rule, UrlGuard.from_settings(self.settings))
        rule = _seal_webhook_secrets(rule, self.rt.secrets, None)

        async def unit(uow: UnitOfWork) -> None:
            doc = {**_rule_to_doc(rule, tenant), "created_at": uow.now, "updated_at": uow.now}
            try:
                await uow.db.rules.insert_one(doc, session=uow.session)
            except DuplicateKeyError as exc:
                raise Conflict("A rule with this id exists.", errors={"id": "already used"}) from exc

        await self.store.atomic(unit)
        return self._rule_view(rule, {})

    async def update_rule(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Built-in rules: ``enabled`` (and ``stage_tasks`` for the stage rule); custom rules: any
        field but ``id``."""
        require_admin(ctx)
        tenant = tenant_of(ctx)
        rule_id = str(args["rule_id"])
        changes = dict(args.get("changes") or {})
        if rule_id in r.BUILTIN_RULE_IDS:
            return await self._update_builtin(tenant, rule_id, changes)
        doc = must(await self.db.rules.find_one({"_id": f"{tenant}:{rule_id}", "tenant_id": tenant}), "rule")
        if "id" in changes and changes["id"] != rule_id:
            raise ValidationFailed({"id": "cannot be changed"})
        if "stage_tasks" in changes:
            raise ValidationFailed({"stage_tasks": "only the built-in stage_tasks rule has stage tasks"})
        current = _rule_from_doc(doc).model_dump(mode="json")
        previous = _rule_from_doc(doc)
        rule = r.parse_rule({**current, **changes, "builtin": False}, rule_id=rule_id)
        _check_event_type(rule)
        await _check_webhook_urls(rule, UrlGuard.from_settings(self.settings))
        rule = _seal_webhook_secrets(rule, self.rt.secrets, previous)

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.rules.replace_one(
                {"_id": doc["_id"], "tenant_id": tenant},
                {**_rule_to_doc(rule, tenant), "created_at": doc.get("created_at"), "updated_at": uow.now},
                session=uow.session,
            )

        await self.store.atomic(unit)
        return self._rule_view(rule, {})

    async def _update_builtin(self, tenant: str, rule_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        allowed = {"enabled", "stage_tasks"} if rule_id == r.STAGE_TASKS else {"enabled"}
        errors = {k: "cannot be changed on a built-in rule" for k in changes if k not in allowed}
        if "enabled" in changes and not isinstance(changes["enabled"], bool):
            errors["enabled"] = "must be true or false"
        stage_tasks: dict[str, list[dict[str, Any]]] | None = None
        if "stage_tasks" in changes and "stage_tasks" not in errors:
            stage_tasks, st_errors = _parse_stage_tasks(changes["stage_tasks"])
            errors.update(st_errors)
        if errors:
            raise ValidationFailed(errors)
        update: dict[str, Any] = {}
        if "enabled" in changes:
            op = "$pull" if changes["enabled"] else "$addToSet"
            update[op] = {"disabled_rules": rule_id}
        if stage_tasks is not None:
            update["$set"] = {"stage_tasks": stage_tasks}

        async def unit(uow: UnitOfWork) -> None:
            if update:
                await uow.db.settings.update_one({"_id": tenant}, update, upsert=True, session=uow.session)

        await self.store.atomic(unit)
        settings = await self._settings(tenant)
        rule = next(x for x in r.default_rules() if x.id == rule_id)
        return self._rule_view(rule, settings)

    async def delete_rule(self, ctx: dict[str, Any], args: dict[str, Any]) -> None:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        rule_id = str(args["rule_id"])
        if rule_id in r.BUILTIN_RULE_IDS:
            raise ValidationFailed({"id": "a built-in rule cannot be deleted; disable it instead"})
        res = await self.db.rules.delete_one({"_id": f"{tenant}:{rule_id}", "tenant_id": tenant})
        if res.deleted_count == 0:
            raise NotFound("rule")

    # ---- events -----------------------------------------------------------------------------

    async def on_rule_event(self, env: Envelope) -> None:
        # DuplicateKeyError: another replica made the same rule task from a twin event; the
        # retry skips it
        await self.store.consume(
            env,
            CONSUMER_RULES,
            lambda uow: self._run_rules(uow, env),
            retry_on=(DuplicateKeyError,),
            attempts=3,
        )

    async def _run_rules(self, uow: UnitOfWork, env: Envelope) -> int:
        tenant = env.tenant_id
        settings = await self._settings(tenant, uow.session)
        custom = await self._custom_rules(tenant, uow.session)
        rules = [
            x
            for x in r.effective_rules(custom, settings.get("disabled_rules") or [])
            if x.event_type == env.event_type
        ]
        if not rules:
            return 0
        payload = env.payload
        event = {
            "event_id": _dedupe_key(env),
            "event_type": env.event_type,
            "payload": payload,
        }
        ctx = r.RuleContext(
            now=_event_time(env),
            contact_owner_id=payload.get("owner_id") if env.event_type.startswith("interaction.") else None,
            channel_owner_id=payload.get("channel_owner_id"),
            deal_owner_id=payload.get("owner_id") if env.event_type.startswith("deal.") else None,
            round_robin=settings.get("round_robin") or {},
            stage_tasks=settings.get("stage_tasks") or {},
        )
        actions = r.evaluate(rules, event, ctx)
        done = 0
        for action in actions:
            if action.type == "create_task":
                done += await self._rule_task(uow, tenant, action, env)
            else:
                body = {**action.params, **action.causation(), "action_key": action.idempotency_key}
                uow.emit(
                    RULE_COMMANDS[action.type],
                    tenant,
                    body,
                    idempotency_key=action.idempotency_key,
                    caused_by=env,
                )
                done += 1
        counters = r.updated_counters(settings.get("round_robin") or {}, actions)
        if counters != (settings.get("round_robin") or {}):
            await uow.db.settings.update_one(
                {"_id": tenant}, {"$set": {"round_robin": counters}}, upsert=True, session=uow.session
            )
        if done:
            log.info("automation rules acted", extra={"event_id": env.event_id, "actions": done})
        return done

    async def _rule_task(self, uow: UnitOfWork, tenant: str, action: r.Action, env: Envelope) -> int:
        key = f"{tenant}:{action.idempotency_key}"
        if await uow.db.tasks.find_one({"rule_key": key}, {"_id": 1}, session=uow.session):
            return 0
        try:
            task, events = r.apply_create_task(action, task_id=new_id(), tenant_id=tenant, now=uow.now)
        except d.ValidationFailed:
            log.warning("rule made an invalid task; skipped", extra={"rule_id": action.rule_id})
            return 0
        await uow.db.tasks.insert_one({**task.to_doc(), "rule_key": key}, session=uow.session)
        for ev in events:
            uow.emit(
                ev["event_type"], tenant, ev["payload"], idempotency_key=action.idempotency_key, caused_by=env
            )
        return 1

    async def on_user_changed(self, env: Envelope) -> None:
        p = env.payload

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.users.update_one(
                {"_id": f"{env.tenant_id}:{p['user_id']}"},
                {
                    "$set": {
                        "tenant_id": env.tenant_id,
                        "user_id": p["user_id"],
                        "name": p.get("name"),
                        "role": p.get("role"),
                        "active": p.get("active", True),
                        "updated_at": uow.now,
                    }
                },
                upsert=True,
                session=uow.session,
            )

        await self.store.consume(env, CONSUMER_USERS, unit)

    async def on_contact_merged(self, env: Envelope) -> None:
        survivor, merged = env.payload["contact_id"], env.payload["merged_id"]

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.tasks.update_many(
                {"tenant_id": env.tenant_id, "contact_id": merged},
                {"$set": {"contact_id": survivor, "updated_at": uow.now}, "$inc": {"version": 1}},
                session=uow.session,
            )

        await self.store.consume(env, CONSUMER_MERGED, unit)

    async def on_contact_erased(self, env: Envelope) -> None:
        contact = env.payload["contact_id"]

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.tasks.update_many(
                {"tenant_id": env.tenant_id, "contact_id": contact},
                {
                    "$set": {"title": ERASED_TITLE, "result": None, "erased": True, "updated_at": uow.now},
                    "$inc": {"version": 1},
                },
                session=uow.session,
            )

        await self.store.consume(env, CONSUMER_ERASED, unit)


# ---- module helpers ---------------------------------------------------------------------------


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
