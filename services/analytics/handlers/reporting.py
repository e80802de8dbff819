"""Reports (built by :mod:`services.analytics.reports` from the read models only), plans and
marketing costs, by RPC."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING

from services.analytics import answers, reports
from services.analytics.api import REPORTS
from services.analytics.handlers.readmodels import MAX_ROWS, _at
from services.common.access import require_admin, tenant_of
from shared.clock import new_id
from shared.csvsafe import csv_table
from shared.errors import NotFound, ValidationFailed
from shared.service import Service


class ReportHandlers(Service):
    name = "analytics"

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
