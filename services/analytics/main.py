"""The analytics service: read models built from events; reports read only them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pymongo import ASCENDING, IndexModel

from services.analytics import answers, reports
from services.common.access import require_admin, tenant_of
from shared.clock import as_utc, new_id
from shared.csvsafe import csv_table
from shared.errors import NotFound, ValidationFailed
from shared.events import Envelope
from shared.mongo import UnitOfWork
from shared.service import Service

REPORTS = (
    "funnel",
    "conversion",
    "cycle-time",
    "sources",
    "plan-vs-actual",
    "forecast",
    "ltv-cac",
    "activity",
    "response-time",
)
CONSUMER = "analytics.readmodel"
MAX_ROWS = 200_000


def _at(value: Any) -> datetime | None:
    if value is None:
        return None
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


class AnalyticsService(Service):
    name = "analytics"
    indexes: ClassVar = {
        "deals": [
            IndexModel([("tenant_id", ASCENDING), ("pipeline_id", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("owner_id", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("contact_id", ASCENDING)]),
        ],
        "contacts": [IndexModel([("tenant_id", ASCENDING), ("created_at", ASCENDING)])],
        "interactions": [IndexModel([("tenant_id", ASCENDING), ("occurred_at", ASCENDING)])],
        "tasks_done": [IndexModel([("tenant_id", ASCENDING), ("completed_at", ASCENDING)])],
        "pipelines": [IndexModel([("tenant_id", ASCENDING)])],
        "plans": [IndexModel([("tenant_id", ASCENDING), ("period", ASCENDING)])],
        "costs": [IndexModel([("tenant_id", ASCENDING), ("period", ASCENDING)])],
    }

    def setup(self) -> None:
        handlers = {
            "pipeline.created": self._pipeline,
            "pipeline.updated": self._pipeline,
            "pipeline.deleted": self._pipeline,
            "deal.created": self._deal,
            "deal.updated": self._deal,
            "deal.stage_changed": self._deal_moved,
            "deal.won": self._deal,
            "deal.lost": self._deal,
            "deal.reopened": self._deal,
            "contact.created": self._contact,
            "contact.merged": self._contact_merged,
            "interaction.recorded": self._interaction,
            "task.completed": self._task_done,
            "message.sent": answers.record_answer,
        }
        for event_type, fn in handlers.items():
            self.on(event_type, self._consumer(fn), consumer=f"analytics.{event_type.replace('.', '_')}")
        for name in ("report", "create_plan", "list_plans", "create_cost", "list_costs"):
            self.rpc.method(name)(getattr(self, name))

    def _consumer(self, fn: Any) -> Any:
        async def handle(env: Envelope) -> None:
            await self.store.consume(env, CONSUMER, lambda uow: fn(uow, env))

        return handle

    # ---- read models ------------------------------------------------------------------------

    async def _pipeline(self, uow: UnitOfWork, env: Envelope) -> None:
        """The pipeline as of its newest event (their queues differ, so they may arrive out of
        order); a deleted one stays as a tombstone that reports skip."""
        p = env.payload
        at = _at(p.get("occurred_at")) or env.occurred_at
        key = {"_id": p["pipeline_id"], "tenant_id": env.tenant_id}
        known = await uow.db.pipelines.find_one(key, {"changed_at": 1}, session=uow.session)
        if known is not None and known.get("changed_at") and as_utc(known["changed_at"]) > at:
            return
        fields: dict[str, Any] = {"changed_at": at, "deleted": env.event_type == "pipeline.deleted"}
        if env.event_type != "pipeline.deleted":
            fields.update(name=p.get("name"), stages=p.get("stages", []), default=bool(p.get("default")))
        await uow.db.pipelines.update_one(key, {"$set": fields}, upsert=True, session=uow.session)

    async def _deal(self, uow: UnitOfWork, env: Envelope) -> None:
        """Fields of the deal as of the latest event (events may arrive out of order)."""
        p = env.payload
        at = _at(p.get("occurred_at")) or env.occurred_at
        fields: dict[str, Any] = {
            k: p[k]
            for k in (
                "pipeline_id",
                "owner_id",
                "contact_id",
                "amount",
                "currency",
                "probability",
                "status",
                "expected_close",
            )
            if k in p
        }
        if p.get("source"):
            fields["source"] = p["source"]
        if env.event_type == "deal.won":
            fields["won_at"] = _at(p.get("won_at")) or at
        if env.event_type == "deal.reopened":
            fields["status"] = "open"
        if env.event_type == "deal.lost":
            fields["lost_at"] = _at(p.get("lost_at")) or at
            fields["lost_reason"] = p.get("lost_reason")
        created = env.event_type == "deal.created"
        await self._record_deal(
            uow, env, at, fields, visit=p.get("stage_id") if created else None, created=created
        )

    async def _deal_moved(self, uow: UnitOfWork, env: Envelope) -> None:
        p = env.payload
        at = _at(p.get("occurred_at")) or env.occurred_at
        fields: dict[str, Any] = {
            k: p[k]
            for k in ("pipeline_id", "contact_id", "amount", "currency", "probability", "owner_id")
            if k in p
        }
        fields["status"] = p.get("to_kind", "open")
        await self._record_deal(uow, env, at, fields, visit=p["to_stage_id"])

    async def _record_deal(
        self,
        uow: UnitOfWork,
        env: Envelope,
        at: datetime,
        fields: dict[str, Any],
        *,
        visit: str | None = None,
        created: bool = False,
    ) -> None:
        """Add the stage visit (a set: a repeat is harmless), then set ``fields`` only when this
        event is not older than what the read model already holds (events arrive in any order)."""
        flt = {"_id": env.payload["deal_id"], "tenant_id": env.tenant_id}
        visits = [{"stage_id": visit, "entered_at": at}] if visit else []
        first: dict[str, Any] = {"$addToSet": {"visits": {"$each": visits}}}
        if created:
            first["$set"] = {"created_at": at}
        await uow.db.deals.update_one(flt, first, upsert=True, session=uow.session)
        await uow.db.deals.update_one(
            {**flt, "$or": [{"updated_at": {"$lte": at}}, {"updated_at": {"$exists": False}}]},
            {"$set": {**fields, "updated_at": at}},
            session=uow.session,
        )

    async def _contact(self, uow: UnitOfWork, env: Envelope) -> None:
        p = env.payload
        await uow.db.contacts.update_one(
            {"_id": p["contact_id"], "tenant_id": env.tenant_id},
            {
                "$setOnInsert": {
                    "source": p.get("source"),
                    "owner_id": p.get("owner_id"),
                    "created_at": env.occurred_at,
                }
            },
            upsert=True,
            session=uow.session,
        )

    async def _contact_merged(self, uow: UnitOfWork, env: Envelope) -> None:
        """The merged-away contact stops counting as a lead of its own; its history stays."""
        p = env.payload
        await uow.db.contacts.update_one(
            {"_id": p["merged_id"], "tenant_id": env.tenant_id},
            {"$set": {"merged_into": p["contact_id"]}},
            session=uow.session,
        )
        for coll in ("deals", "interactions"):
            await uow.db[coll].update_many(
                {"tenant_id": env.tenant_id, "contact_id": p["merged_id"]},
                {"$set": {"contact_id": p["contact_id"]}},
                session=uow.session,
            )

    async def _interaction(self, uow: UnitOfWork, env: Envelope) -> None:
        p = env.payload
        if not p.get("first_of_subject", True):
            return
        await uow.db.interactions.update_one(
            {"_id": p["interaction_id"], "tenant_id": env.tenant_id},
            {
                "$setOnInsert": {
                    "contact_id": p["contact_id"],
                    "owner_id": p.get("owner_id"),
                    "kind": p["kind"],
                    "direction": p["direction"],
                    "occurred_at": _at(p["occurred_at"]),
                    "channel_kind": p.get("channel_kind"),
                    "is_new_contact": bool(p.get("is_new_contact")),
                }
            },
            upsert=True,
            session=uow.session,
        )

    async def _task_done(self, uow: UnitOfWork, env: Envelope) -> None:
        p = env.payload
        await uow.db.tasks_done.update_one(
            {"_id": p["task_id"], "tenant_id": env.tenant_id},
            {
                "$setOnInsert": {
                    "assignee_id": p.get("assignee_id"),
                    "contact_id": p.get("contact_id"),
                    "kind": p.get("kind"),
                    "completed_at": _at(p.get("completed_at")) or env.occurred_at,
                }
            },
            upsert=True,
            session=uow.session,
        )

    # ---- reports ----------------------------------------------------------------------------

    def _owner_filter(
        self, ctx: dict[str, Any], owner_id: str | None, field: str = "owner_id"
    ) -> dict[str, Any]:
        flt: dict[str, Any] = {"tenant_id": tenant_of(ctx)}
        sees_all = ctx.get("role") == "admin" or (ctx.get("settings") or {}).get("managers_see_all")
        if owner_id:
            if not sees_all and owner_id != ctx.get("user_id"):
                flt[field] = {"$in": []}
            else:
                flt[field] = owner_id
        elif not sees_all:
            flt[field] = {"$in": [ctx.get("user_id"), None]}
        return flt

    async def _all(self, coll: str, flt: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.db[coll].find(flt).to_list(length=MAX_ROWS)

    async def report(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        name = args["name"]
        if name not in REPORTS:
            raise NotFound("report")
        start, end = _at(args.get("from")), _at(args.get("to"))
        if start and end and start >= end:
            raise ValidationFailed({"to": "must be after from"})
        owner_id, pipeline_id = args.get("owner_id"), args.get("pipeline_id")
        tenant = tenant_of(ctx)
        deal_flt = self._owner_filter(ctx, owner_id)
        if pipeline_id:
            deal_flt["pipeline_id"] = pipeline_id
        result: dict[str, Any]
        if name in ("funnel", "cycle-time"):
            pipeline = await self._pipeline_doc(tenant, pipeline_id)
            if pipeline is None:
                result = (
                    {"pipeline_id": None, "stages": [], "won": 0, "lost": 0, "win_rate": 0.0}
                    if name == "funnel"
                    else reports.cycle_time(None, [], start, end)
                )
            else:
                deals = await self._all("deals", {**deal_flt, "pipeline_id": pipeline["_id"]})
                result = (reports.funnel if name == "funnel" else reports.cycle_time)(
                    pipeline, deals, start, end
                )
        elif name == "conversion":
            result = reports.conversion(
                await self._leads(ctx, owner_id), await self._all("deals", deal_flt), start, end
            )
        elif name == "sources":
            result = reports.sources(
                await self._leads(ctx, owner_id),
                await self._all("deals", deal_flt),
                await self._all("costs", {"tenant_id": tenant}),
                start,
                end,
            )
        elif name == "plan-vs-actual":
            plans = await self._all(
                "plans", {"tenant_id": tenant, **({"owner_id": owner_id} if owner_id else {})}
            )
            result = reports.plan_vs_actual(plans, await self._all("deals", deal_flt), start, end)
        elif name == "forecast":
            result = reports.forecast(await self._all("deals", deal_flt))
        elif name == "ltv-cac":
            result = reports.ltv_cac(
                await self._leads(ctx, owner_id),
                await self._all("deals", deal_flt),
                await self._all("costs", {"tenant_id": tenant}),
                start,
                end,
            )
        elif name == "activity":
            result = reports.activity(
                await self._all("interactions", self._owner_filter(ctx, owner_id)),
                await self._all("tasks_done", self._owner_filter(ctx, owner_id, "assignee_id")),
                start,
                end,
            )
        else:
            sla = int((ctx.get("settings") or {}).get("sla_minutes") or 15)
            result = reports.response_time(
                await self._all("interactions", self._owner_filter(ctx, owner_id)),
                await self._all("tasks_done", {"tenant_id": tenant}),
                start,
                end,
                sla,
            )
            result["replies"] = answers.replies(
                await self._all("answers", self._owner_filter(ctx, owner_id, "assignee_id")), start, end, sla
            )
        result["report"] = name
        if args.get("format") == "csv":
            return {"csv": to_csv(result, reports.CSV_ROWS.get(name, "items"))}
        return result

    async def _leads(self, ctx: dict[str, Any], owner_id: str | None) -> list[dict[str, Any]]:
        flt = self._owner_filter(ctx, owner_id)
        flt["merged_into"] = {"$exists": False}
        return await self._all("contacts", flt)

    async def _pipeline_doc(self, tenant: str, pipeline_id: str | None) -> dict[str, Any] | None:
        live = {"tenant_id": tenant, "deleted": {"$ne": True}}
        if pipeline_id:
            return await self.db.pipelines.find_one({**live, "_id": pipeline_id})
        return await self.db.pipelines.find_one(
            {**live, "default": True}
        ) or await self.db.pipelines.find_one(live, sort=[("_id", ASCENDING)])

    # ---- plans and marketing costs ----------------------------------------------------------

    async def create_plan(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        body = args["body"]
        doc = {"_id": new_id(), "tenant_id": tenant_of(ctx), **body}
        await self.db.plans.update_one(
            {
                "tenant_id": doc["tenant_id"],
                "period": body["period"],
                "owner_id": body.get("owner_id"),
                "pipeline_id": body.get("pipeline_id"),
            },
            {"$set": body, "$setOnInsert": {"_id": doc["_id"]}},
            upsert=True,
        )
        saved = await self.db.plans.find_one(
            {
                "tenant_id": doc["tenant_id"],
                "period": body["period"],
                "owner_id": body.get("owner_id"),
                "pipeline_id": body.get("pipeline_id"),
            }
        )
        return _public(saved)

    async def list_plans(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        docs = (
            await self.db.plans.find({"tenant_id": tenant_of(ctx)}).sort("period", ASCENDING).to_list(10_000)
        )
        return {"items": [_public(d) for d in docs], "next_cursor": None}

    async def create_cost(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        doc = {"_id": new_id(), "tenant_id": tenant_of(ctx), **args["body"]}
        await self.db.costs.insert_one(doc)
        return _public(doc)

    async def list_costs(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        docs = (
            await self.db.costs.find({"tenant_id": tenant_of(ctx)}).sort("period", ASCENDING).to_list(10_000)
        )
        return {"items": [_public(d) for d in docs], "next_cursor": None}


def _public(doc: dict[str, Any] | None) -> dict[str, Any]:
    if doc is None:
        raise NotFound("record")
    out = {k: v for k, v in doc.items() if k not in ("_id", "tenant_id")}
    return {"id": doc["_id"], **out}


def to_csv(result: dict[str, Any], rows_key: str) -> str:
    """One row per item; the item's field names as the header (cells escaped: shared/csvsafe)."""
    return csv_table(result.get(rows_key) or [])
