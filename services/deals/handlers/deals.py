"""Deals: listing, reading, the GDPR export, create, update, move, import."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import DESCENDING

from services.common.access import read_filter, require_admin, require_writer, tenant_of
from services.deals import domain as d
from services.deals.handlers.base import IMPORT_MAX, DealsBase
from services.deals.store import IX_CONTACT, StaleWrite, listing_hint
from shared.clock import new_id
from shared.errors import NotFound, ValidationFailed
from shared.mongo import UnitOfWork
from shared.pagination import clamp_limit, decode_cursor, page


class DealHandlers(DealsBase):
    # ---- deals: queries -----------------------------------------------------------------------

    async def listing_query(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any] | None:
        """The query :meth:`list_deals` runs: ``{"filter", "hint", "sort", "limit"}`` (``limit`` is
        the page size + 1), or ``None`` when nothing can match. Public so its plan can be explained."""
        limit = clamp_limit(args.get("limit"))
        tenant = tenant_of(ctx)
        filters = {k: v for k, v in (args.get("filters") or {}).items() if v is not None}
        flt: dict[str, Any] = read_filter(ctx)
        if "stage_id" in filters and "pipeline_id" not in filters:
            owner = await self.db.pipelines.find_one(
                {"tenant_id": tenant, "stages.id": filters["stage_id"]}, {"_id": 1}
            )
            if owner is None:
                return None
            filters["pipeline_id"] = owner["_id"]
        for key in ("pipeline_id", "stage_id", "contact_id", "status"):
            if key in filters:
                flt[key] = filters[key]
        if "owner_id" in filters:
            wanted = filters["owner_id"]
            if "owner_id" in flt:  # a manager asking for someone it may not see gets nothing
                if wanted not in flt["owner_id"]["$in"]:
                    return None
            flt["owner_id"] = wanted
        after = decode_cursor(args.get("cursor"))
        if after:
            flt["_id"] = {"$lt": str(after[0])}
        return {"filter": flt, "hint": listing_hint(flt), "sort": [("_id", DESCENDING)], "limit": limit + 1}

    async def list_deals(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Newest first, ``limit`` per page, ``next_cursor`` = the last ``_id``; always on an index
        whose prefix is the filter's equality fields and whose suffix is ``_id``."""
        query = await self.listing_query(ctx, args)
        if query is None:
            return {"items": [], "next_cursor": None}
        docs = (
            await self.db.deals.find(query["filter"])
            .hint(query["hint"])
            .sort(query["sort"])
            .limit(query["limit"])
            .to_list(query["limit"])
        )
        items = [d.Deal.from_doc(doc).to_public() for doc in docs]
        return page(items, query["limit"] - 1, lambda it: [it["id"]])

    async def get_deal(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        deal_id = args.get("deal_id")
        doc = (
            await self.db.deals.find_one({**read_filter(ctx), "_id": deal_id})
            if isinstance(deal_id, str)
            else None
        )
        if doc is None:
            raise NotFound("deal")
        return d.Deal.from_doc(doc).to_public()

    async def export_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """GDPR export: every deal of the contact the caller may see, as the API shows it."""
        contact_id = args.get("contact_id")
        if not isinstance(contact_id, str):
            raise ValidationFailed({"contact_id": "is required"})
        docs = (
            await self.db.deals.find({**read_filter(ctx), "contact_id": contact_id})
            .hint(IX_CONTACT)
            .sort("_id", DESCENDING)
            .to_list(None)
        )
        return {"deals": [d.Deal.from_doc(doc).to_public() for doc in docs]}

    # ---- deals: commands ----------------------------------------------------------------------

    async def create_deal(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_writer(ctx)
        tenant = tenant_of(ctx)
        body = dict(args.get("body") or {})
        body["owner_id"] = self._owner_for_new_deal(ctx, body)
        currency = (ctx.get("settings") or {}).get("default_currency")

        async def unit(uow: UnitOfWork) -> d.Deal:
            pipeline = d.select_pipeline(await self.deals.pipelines(uow, tenant), body.get("pipeline_id"))
            if pipeline is None:
                raise ValidationFailed({"pipeline_id": "is required: the tenant has no default pipeline"})
            deal, events = d.create_deal(
                tenant,
                body,
                pipeline,
                new_id,
                uow.now,
                source=await self.deals.source(uow, tenant, body.get("contact_id")),
                loss_reasons=await self.deals.reasons(uow, tenant),
                default_currency=currency,
            )
            await self.deals.insert_deal(uow, deal)
            uow.emit_all(tenant, events)
            return deal

        return (await self.store.atomic(unit, retry_on=(StaleWrite,))).to_public()

    async def update_deal(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_writer(ctx)
        tenant = tenant_of(ctx)
        changes = dict(args.get("changes") or {})

        async def unit(uow: UnitOfWork) -> d.Deal:
            doc = await self.deals.writable_deal(uow, ctx, args.get("deal_id"))
            deal = d.Deal.from_doc(doc)
            pipeline = await self.deals.pipeline(uow, tenant, deal.pipeline_id)
            updated, events = d.update_deal(
                deal, pipeline, changes, uow.now, loss_reasons=await self.deals.reasons(uow, tenant)
            )
            if updated != deal:
                await self.deals.save_deal(uow, updated, int(doc.get("rev", 0)))
                uow.emit_all(tenant, events)
            return updated

        return (await self.store.atomic(unit, retry_on=(StaleWrite,))).to_public()

    async def move_deal(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_writer(ctx)
        tenant = tenant_of(ctx)
        body = args.get("body") or {}
        stage_id = body.get("stage_id")
        if not isinstance(stage_id, str) or not stage_id:
            raise ValidationFailed({"stage_id": "is required"})

        async def unit(uow: UnitOfWork) -> d.Deal:
            doc = await self.deals.writable_deal(uow, ctx, args.get("deal_id"))
            deal = d.Deal.from_doc(doc)
            pipeline = await self.deals.pipeline(uow, tenant, deal.pipeline_id)
            if pipeline.stage(stage_id) is None:
                other = await uow.db.pipelines.find_one(
                    {"tenant_id": tenant, "stages.id": stage_id}, {"_id": 1}, session=uow.session
                )
                detail = (
                    "is a stage of another pipeline; a deal moves only within its own pipeline"
                    if other
                    else "is not a stage of this deal's pipeline"
                )
                raise ValidationFailed({"stage_id": detail})
            moved, events = d.move(
                deal,
                pipeline,
                stage_id,
                uow.now,
                body.get("lost_reason"),
                await self.deals.reasons(uow, tenant),
            )
            if moved != deal:
                await self.deals.save_deal(uow, moved, int(doc.get("rev", 0)))
                uow.emit_all(tenant, events)
            return moved

        return (await self.store.atomic(unit, retry_on=(StaleWrite,))).to_public()

    async def import_deals(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Historical deals with their past stage dates: all valid or none written (422 naming
        ``deals.<i>.<field>``). An item's ``external_id`` makes a re-run skip what was imported."""
        require_admin(ctx)
        tenant = tenant_of(ctx)
        body = args.get("body") or {}
        items = body.get("deals")
        if not isinstance(items, list) or not items:
            raise ValidationFailed({"deals": "must be a non-empty list of deals"})
        if len(items) > IMPORT_MAX:
            raise ValidationFailed({"deals": f"at most {IMPORT_MAX} deals per request"})
        currency = (ctx.get("settings") or {}).get("default_currency")

        async def unit(uow: UnitOfWork) -> dict[str, Any]:
            pipelines = await self.deals.pipelines(uow, tenant)
            errors: dict[str, str] = {}
            planned: list[tuple[int, d.Deal, list[d.Event], str | None]] = []
            for i, raw in enumerate(items):
                if not isinstance(raw, Mapping):
                    errors[f"deals.{i}"] = "must be an object"
                    continue
                data = dict(raw)
                external_id = data.pop("external_id", None)
                explicit_source = data.pop("source", None)
                if external_id is not None and not isinstance(external_id, str):
                    errors[f"deals.{i}.external_id"] = "must be a string"
                    continue
                if explicit_source is not None and not isinstance(explicit_source, Mapping):
                    errors[f"deals.{i}.source"] = "must be an object"
                    continue
                data.setdefault("pipeline_id", body.get("pipeline_id"))
                try:
                    pipeline = d.select_pipeline(pipelines, data.get("pipeline_id"))
                    if pipeline is None:
                        raise ValidationFailed(
                            {"pipeline_id": "is required: the tenant has no default pipeline"}
                        )
                    source = explicit_source or await self.deals.source(uow, tenant, data.get("contact_id"))
                    deal, events = d.import_deal(
                        tenant, data, pipeline, new_id, uow.now, source=source, default_currency=currency
                    )
                except ValidationFailed as exc:
                    errors.update({f"deals.{i}.{k}": v for k, v in exc.errors.items()})
                    continue
                except d.ValidationFailed as exc:
                    errors.update({f"deals.{i}.{k}": v for k, v in exc.errors.items()})
                    continue
                planned.append((i, deal, events, external_id))
            if errors:
                raise ValidationFailed(errors)
            results: list[dict[str, Any]] = []
            for i, deal, events, external_id in planned:
                if external_id is not None:
                    key = f"{tenant}|import|{external_id}"
                    existing = await uow.db.keys.find_one({"_id": key}, session=uow.session)
                    if existing is not None:
                        results.append({"index": i, "id": existing["deal_id"], "created": False})
                        continue
                    await uow.db.keys.insert_one({"_id": key, "deal_id": deal.id}, session=uow.session)
                await self.deals.insert_deal(uow, deal, external_id=external_id)
                uow.emit_all(tenant, events)
                results.append({"index": i, "id": deal.id, "created": True})
            return {"items": results, "created": sum(1 for r in results if r["created"])}

        return await self.store.atomic(unit, retry_on=(StaleWrite,))
