"""Tasks by RPC: create, list, read, change, complete, cancel, reassign, workload, the calendar feed, the GDPR export."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING

from services.common.access import read_filter, tenant_of, write_filter
from services.tasks import domain as d
from services.tasks.calendar import render_calendar
from services.tasks.handlers.base import (
    BULK_LIMIT,
    CALENDAR_HORIZON,
    WORKLOAD_SCAN_LIMIT,
    TasksBase,
    _as_stored,
    _parse_when,
    _version_key,
    _view,
)
from shared.clock import new_id
from shared.errors import Forbidden, NotFound, ValidationFailed
from shared.mongo import UnitOfWork
from shared.pagination import clamp_limit, decode_cursor, page


class TaskHandlers(TasksBase):
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
