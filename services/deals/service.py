"""The deals service: pipelines, loss reasons, deals, moves and their stage history.

The rules live in :mod:`services.deals.domain` (pure); this module loads state, applies a domain
command, and writes the new state together with the command's events (outbox) in one transaction.

Collections (database ``<ns>_deals``):

- ``pipelines``: :meth:`Pipeline.to_doc`; ``loss_reasons``: one document per tenant ``{reasons}``.
- ``deals``: :meth:`Deal.to_doc` plus ``rev`` (optimistic concurrency), ``inbox_item_id`` and
  ``external_id`` (imports) where they apply.
- ``keys``: one document per idempotency key (``<tenant>|inbox|<item id>``,
  ``<tenant>|import|<external id>``), written in the transaction that creates the deal.
- ``open_tasks``: the tasks service's tasks that name a deal (from ``task.*`` events), so each
  deal's ``next_action`` (its earliest open task) can be recomputed without asking tasks.
- ``contact_sources``: each contact's first-touch attribution (from ``contact.created``), copied
  to the contact's new deals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.common.access import read_filter, require_admin, require_writer, tenant_of, write_filter
from services.deals import domain as d
from shared.clock import new_id
from shared.errors import AppError, Forbidden, NotFound, ValidationFailed
from shared.events import Envelope
from shared.mongo import UnitOfWork
from shared.pagination import clamp_limit, decode_cursor, page
from shared.service import Service

log = logging.getLogger(__name__)
T = TypeVar("T")

IX_PIPELINE_STAGE = [("tenant_id", ASCENDING), ("pipeline_id", ASCENDING), ("stage_id", ASCENDING), ("_id", DESCENDING)]  # fmt: skip
IX_PIPELINE = [("tenant_id", ASCENDING), ("pipeline_id", ASCENDING), ("_id", DESCENDING)]
IX_CONTACT = [("tenant_id", ASCENDING), ("contact_id", ASCENDING), ("_id", DESCENDING)]
IX_OWNER = [("tenant_id", ASCENDING), ("owner_id", ASCENDING), ("_id", DESCENDING)]
IX_TENANT = [("tenant_id", ASCENDING), ("_id", DESCENDING)]

BATCH = 200
"""Deals changed per transaction when a pipeline edit moves or re-weights many of them."""
IMPORT_MAX = 500
TASK_EVENTS = ("task.created", "task.updated", "task.completed", "task.canceled", "task.reassigned")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StaleWrite(Exception):
    """A deal changed between our read and our write; the unit is run again."""


def _micros(at: datetime) -> int:
    return (d.as_utc(at) - EPOCH) // timedelta(microseconds=1)


async def _deals_of_contact(
    uow: UnitOfWork, tenant: str, contact_id: str, **also: Any
) -> list[dict[str, Any]]:
    """A contact's deals (that also match ``also``), read in ``uow`` through the contact index."""
    flt = {"tenant_id": tenant, "contact_id": contact_id, **also}
    return await uow.db.deals.find(flt, session=uow.session).hint(IX_CONTACT).to_list(None)


def _hint(filters: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The index that serves a deal listing with these filters (``_id`` descending within it)."""
    if "pipeline_id" in filters and "stage_id" in filters:
        return IX_PIPELINE_STAGE
    if "pipeline_id" in filters:
        return IX_PIPELINE
    if "contact_id" in filters:
        return IX_CONTACT
    if isinstance(filters.get("owner_id"), str):
        return IX_OWNER
    return IX_TENANT


class DealsService(Service):
    name = "deals"
    indexes: ClassVar = {
        "deals": [
            IndexModel(IX_PIPELINE_STAGE),
            IndexModel(IX_PIPELINE),
            IndexModel(IX_CONTACT),
            IndexModel(IX_OWNER),
            IndexModel(IX_TENANT),
        ],
        "pipelines": [IndexModel([("tenant_id", ASCENDING), ("created_at", ASCENDING)])],
        "open_tasks": [IndexModel([("tenant_id", ASCENDING), ("deal_id", ASCENDING), ("status", ASCENDING)])],
    }

    def setup(self) -> None:
        self.on("inbox.item_accepted", self.on_item_accepted)
        self.on("contact.created", self.on_contact_created)
        self.on("contact.merged", self.on_contact_merged)
        self.on("contact.erased", self.on_contact_erased)
        self.on("rule.move_deal_requested", self.on_rule_move_deal)
        self.on("rule.assign_owner_requested", self.on_rule_assign_owner)
        for event_type in TASK_EVENTS:
            self.on(event_type, self.on_task_event)
        for name in (
            "list_pipelines",
            "get_pipeline",
            "create_pipeline",
            "update_pipeline",
            "delete_stage",
            "delete_pipeline",
            "list_loss_reasons",
            "add_loss_reason",
            "list_deals",
            "get_deal",
            "create_deal",
            "update_deal",
            "move_deal",
            "import_deals",
            "accept_inbox_item",
            "export_contact",
        ):
            self.rpc.method(name)(getattr(self, name))

    # ---- plumbing -----------------------------------------------------------------------------

    async def _pipelines(self, uow: UnitOfWork | None, tenant: str) -> list[d.Pipeline]:
        session = uow.session if uow else None
        docs = (
            await self.db.pipelines.find({"tenant_id": tenant}, session=session)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .to_list(None)
        )
        return [d.Pipeline.from_doc(doc) for doc in docs]

    async def _pipeline(self, uow: UnitOfWork | None, tenant: str, pipeline_id: Any) -> d.Pipeline:
        if not isinstance(pipeline_id, str):
            raise NotFound("pipeline")
        doc = await self.db.pipelines.find_one(
            {"tenant_id": tenant, "_id": pipeline_id}, session=uow.session if uow else None
        )
        if doc is None:
            raise NotFound("pipeline")
        return d.Pipeline.from_doc(doc)

    async def _reasons(self, uow: UnitOfWork | None, tenant: str) -> list[str]:
        doc = await self.db.loss_reasons.find_one({"_id": tenant}, session=uow.session if uow else None)
        return list(doc["reasons"]) if doc else []

    async def _source(self, uow: UnitOfWork, tenant: str, contact_id: Any) -> dict[str, Any] | None:
        """The contact's first-touch source for a deal being created, or ``None`` if unknown yet.

        It also writes the contact's ``contact_sources`` row, as :meth:`on_contact_created` does:
        two transactions racing (a deal created while the source arrives) write the same document,
        so one of them conflicts and runs again, seeing the other; without it each could miss the
        other's write (snapshot isolation) and the deal would never get its source.
        """
        if not isinstance(contact_id, str):
            return None
        doc = await uow.db.contact_sources.find_one_and_update(
            {"_id": f"{tenant}|{contact_id}"},
            {"$setOnInsert": {"tenant_id": tenant, "contact_id": contact_id}, "$inc": {"deals_created": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=uow.session,
        )
        return doc.get("source") if doc else None

    async def _insert_deal(self, uow: UnitOfWork, deal: d.Deal, **extra: Any) -> None:
        await uow.db.deals.insert_one({**deal.to_doc(), "rev": 0, **extra}, session=uow.session)

    async def _save_deal(self, uow: UnitOfWork, deal: d.Deal, rev: int) -> None:
        """Write ``deal`` over the version ``rev`` that was read; :class:`StaleWrite` if it moved on."""
        doc = deal.to_doc()
        doc.pop("_id")
        result = await uow.db.deals.update_one(
            {"_id": deal.id, "tenant_id": deal.tenant_id, "rev": rev},
            {"$set": {**doc, "rev": rev + 1}},
            session=uow.session,
        )
        if result.matched_count != 1:
            raise StaleWrite(deal.id)

    async def _writable_deal(self, uow: UnitOfWork, ctx: dict[str, Any], deal_id: Any) -> dict[str, Any]:
        """The deal the caller may change: 404 when it cannot see it, 403 when it may only read it."""
        wf = write_filter(ctx)
        if not isinstance(deal_id, str):
            raise NotFound("deal")
        doc = await uow.db.deals.find_one({**wf, "_id": deal_id}, session=uow.session)
        if doc is not None:
            return doc
        if await uow.db.deals.find_one({**read_filter(ctx), "_id": deal_id}, {"_id": 1}, session=uow.session):
            raise Forbidden("This deal belongs to another user; a manager changes its own and unowned deals.")
        raise NotFound("deal")

    @staticmethod
    def _owner_for_new_deal(ctx: dict[str, Any], body: Mapping[str, Any]) -> Any:
        owner = body.get("owner_id")
        if ctx.get("role") != "admin":
            owner = owner or ctx.get("user_id")
            if owner != ctx.get("user_id"):
                raise ValidationFailed({"owner_id": "a manager may only create deals it owns"})
        return owner

    # ---- pipelines ----------------------------------------------------------------------------

    async def list_pipelines(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        pipelines = await self._pipelines(None, tenant_of(ctx))
        return {"items": [p.to_public() for p in pipelines], "next_cursor": None}

    async def get_pipeline(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return (await self._pipeline(None, tenant_of(ctx), args.get("pipeline_id"))).to_public()

    async def create_pipeline(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        body = dict(args.get("body") or {})

        async def unit(uow: UnitOfWork) -> d.Pipeline:
            others = await self._pipelines(uow, tenant)
            data = dict(body)
            if data.get("default") is None and not any(p.default for p in others):
                data["default"] = True  # a tenant's first pipeline is its default one
            pipeline, events = d.create_pipeline(tenant, data, new_id, uow.now)
            await uow.db.pipelines.insert_one(pipeline.to_doc(), session=uow.session)
            uow.emit_all(tenant, events)
            if pipeline.default:
                await self._demote(uow, others, pipeline.id)
            return pipeline

        return (await self.store.atomic(unit, retry_on=(StaleWrite,))).to_public()

    async def _demote(self, uow: UnitOfWork, pipelines: Sequence[d.Pipeline], default_id: str) -> None:
        for demoted, events in d.demote_other_defaults(pipelines, default_id, uow.now):
            await uow.db.pipelines.update_one(
                {"_id": demoted.id, "tenant_id": demoted.tenant_id},
                {"$set": {"default": False, "updated_at": demoted.updated_at}},
                session=uow.session,
            )
            uow.emit_all(demoted.tenant_id, events)

    async def _stage_counts(self, uow: UnitOfWork | None, pipeline: d.Pipeline) -> dict[str, int]:
        session = uow.session if uow else None
        counts: dict[str, int] = {}
        for stage in pipeline.stages:
            counts[stage.id] = await self.db.deals.count_documents(
                {"tenant_id": pipeline.tenant_id, "pipeline_id": pipeline.id, "stage_id": stage.id},
                session=session,
            )
        return counts

    async def update_pipeline(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        changes = dict(args.get("changes") or {})
        pipeline = await self._pipeline(None, tenant, args.get("pipeline_id"))
        return await self._edit_pipeline(
            pipeline,
            lambda p, counts, now: d.edit_pipeline(p, changes, new_id, now, counts),
        )

    async def delete_stage(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        pipeline = await self._pipeline(None, tenant, args.get("pipeline_id"))
        stage_id = str(args.get("stage_id"))
        move_to = args.get("move_to")
        return await self._edit_pipeline(
            pipeline,
            lambda p, counts, now: d.delete_stage(p, stage_id, now, counts.get(stage_id, 0), move_to),
        )

    async def delete_pipeline(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Admin. Delete a pipeline that holds no deals (409 ``pipeline_has_deals`` otherwise)."""
        require_admin(ctx)
        tenant = tenant_of(ctx)
        pipeline_id = args.get("pipeline_id")

        async def unit(uow: UnitOfWork) -> d.Pipeline:
            current = await self._pipeline(uow, tenant, pipeline_id)
            held = await uow.db.deals.count_documents(
                {"tenant_id": tenant, "pipeline_id": current.id}, session=uow.session
            )
            promoted, events = d.delete_pipeline(current, await self._pipelines(uow, tenant), held, uow.now)
            await uow.db.pipelines.delete_one({"_id": current.id, "tenant_id": tenant}, session=uow.session)
            if promoted is not None:
                await uow.db.pipelines.update_one(
                    {"_id": promoted.id, "tenant_id": tenant},
                    {"$set": {"default": True}},
                    session=uow.session,
                )
            uow.emit_all(tenant, events)
            return current

        deleted = await self.store.atomic(unit, retry_on=(StaleWrite,))
        # A deal written by a transaction that read the pipeline before the delete committed may
        # have landed in it: then the pipeline comes back and the delete is refused after all.
        held = await self.db.deals.count_documents({"tenant_id": tenant, "pipeline_id": deleted.id})
        if held:

            async def undo(uow: UnitOfWork) -> None:
                back, events = d.restore_pipeline(deleted, uow.now)
                await uow.db.pipelines.insert_one(back.to_doc(), session=uow.session)
                uow.emit_all(tenant, events)

            await self.store.atomic(undo, retry_on=(StaleWrite,))
            d.delete_pipeline(deleted, [], held, self.clock.now())  # raises pipeline_has_deals
        return {"pipeline_id": deleted.id, "deleted": True}

    async def _edit_pipeline(
        self,
        pipeline: d.Pipeline,
        edit: Callable[[d.Pipeline, dict[str, int], datetime], d.PipelineEdit],
    ) -> dict[str, Any]:
        """Validate the edit, move the deals of deleted stages (in batches, each atomic), then save
        the pipeline in a transaction that moves any deal that entered a deleted stage meanwhile,
        and finally re-weight the deals whose stage probability changed."""
        tenant = pipeline.tenant_id
        planned = edit(pipeline, await self._stage_counts(None, pipeline), self.clock.now())
        for old_stage, target in planned.move_plan.items():
            while await self._move_batch(planned.pipeline, old_stage, target, BATCH, None):
                pass

        async def unit(uow: UnitOfWork) -> d.PipelineEdit:
            current = await self._pipeline(uow, tenant, pipeline.id)
            result = edit(current, await self._stage_counts(uow, current), uow.now)
            if not result.events:
                return result
            for old_stage, target in result.move_plan.items():
                await self._move_batch(result.pipeline, old_stage, target, None, uow)
            await uow.db.pipelines.replace_one(
                {"_id": current.id, "tenant_id": tenant}, result.pipeline.to_doc(), session=uow.session
            )
            uow.emit_all(tenant, result.events)
            if result.pipeline.default and not current.default:
                await self._demote(uow, await self._pipelines(uow, tenant), result.pipeline.id)
            return result

        done = await self.store.atomic(unit, retry_on=(StaleWrite,))
        saved = done.pipeline
        # a move that read the old pipeline and committed while it was saved may have put a deal
        # into a deleted stage: it goes where that stage's deals went (else the first open stage)
        for stage_id in done.deleted_stage_ids:
            target = (
                done.move_plan.get(stage_id) or planned.move_plan.get(stage_id) or saved.first_open_stage.id
            )
            while await self._move_batch(saved, stage_id, target, BATCH, None):
                pass
        changed = {
            s.id
            for s in saved.stages
            if (old := pipeline.stage(s.id)) is None or old.probability != s.probability
        }
        for stage_id in changed:
            while await self._reweight_batch(saved, stage_id):
                pass
        return saved.to_public()

    async def _move_batch(
        self, pipeline: d.Pipeline, from_stage: str, to_stage: str, limit: int | None, uow: UnitOfWork | None
    ) -> int:
        """Move up to ``limit`` deals (all when ``None``) out of a deleted stage; the count moved."""

        async def unit(u: UnitOfWork) -> int:
            cursor = u.db.deals.find(
                {"tenant_id": pipeline.tenant_id, "pipeline_id": pipeline.id, "stage_id": from_stage},
                session=u.session,
            ).hint(IX_PIPELINE_STAGE)
            if limit is not None:
                cursor = cursor.limit(limit)
            docs = await cursor.to_list(None)
            for doc in docs:
                moved, events = d.move(d.Deal.from_doc(doc), pipeline, to_stage, u.now)
                await self._save_deal(u, moved, int(doc.get("rev", 0)))
                u.emit_all(pipeline.tenant_id, events)
            return len(docs)

        if uow is not None:
            return await unit(uow)
        return await self.store.atomic(unit, retry_on=(StaleWrite,))

    async def _reweight_batch(self, pipeline: d.Pipeline, stage_id: str) -> int:
        stage = pipeline.stage(stage_id)
        if stage is None or stage.kind != "open":
            return 0

        async def unit(uow: UnitOfWork) -> int:
            docs = (
                await uow.db.deals.find(
                    {
                        "tenant_id": pipeline.tenant_id,
                        "pipeline_id": pipeline.id,
                        "stage_id": stage_id,
                        "probability_override": None,
                        "probability": {"$ne": stage.probability},
                    },
                    session=uow.session,
                )
                .hint(IX_PIPELINE_STAGE)
                .limit(BATCH)
                .to_list(None)
            )
            for doc in docs:
                synced, events = d.sync_probability(d.Deal.from_doc(doc), pipeline, uow.now)
                await self._save_deal(uow, synced, int(doc.get("rev", 0)))
                uow.emit_all(pipeline.tenant_id, events)
            return len(docs)

        return await self.store.atomic(unit, retry_on=(StaleWrite,))

    # ---- loss reasons -------------------------------------------------------------------------

    async def list_loss_reasons(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        reasons = await self._reasons(None, tenant_of(ctx))
        return {"items": [{"name": r} for r in reasons], "next_cursor": None}

    async def add_loss_reason(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        name = (args.get("body") or {}).get("name")

        async def unit(uow: UnitOfWork) -> str:
            reasons = d.add_loss_reason(await self._reasons(uow, tenant), name)
            await uow.db.loss_reasons.update_one(
                {"_id": tenant},
                {"$set": {"reasons": reasons, "updated_at": uow.now}},
                upsert=True,
                session=uow.session,
            )
            uow.emit("loss_reason.added", tenant, {"name": reasons[-1]})
            return reasons[-1]

        return {"name": await self.store.atomic(unit, retry_on=(StaleWrite,))}

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
        return {"filter": flt, "hint": _hint(flt), "sort": [("_id", DESCENDING)], "limit": limit + 1}

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
            pipeline = d.select_pipeline(await self._pipelines(uow, tenant), body.get("pipeline_id"))
            if pipeline is None:
                raise ValidationFailed({"pipeline_id": "is required: the tenant has no default pipeline"})
            deal, events = d.create_deal(
                tenant,
                body,
                pipeline,
                new_id,
                uow.now,
                source=await self._source(uow, tenant, body.get("contact_id")),
                loss_reasons=await self._reasons(uow, tenant),
                default_currency=currency,
            )
            await self._insert_deal(uow, deal)
            uow.emit_all(tenant, events)
            return deal

        return (await self.store.atomic(unit, retry_on=(StaleWrite,))).to_public()

    async def update_deal(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_writer(ctx)
        tenant = tenant_of(ctx)
        changes = dict(args.get("changes") or {})

        async def unit(uow: UnitOfWork) -> d.Deal:
            doc = await self._writable_deal(uow, ctx, args.get("deal_id"))
            deal = d.Deal.from_doc(doc)
            pipeline = await self._pipeline(uow, tenant, deal.pipeline_id)
            updated, events = d.update_deal(
                deal, pipeline, changes, uow.now, loss_reasons=await self._reasons(uow, tenant)
            )
            if updated != deal:
                await self._save_deal(uow, updated, int(doc.get("rev", 0)))
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
            doc = await self._writable_deal(uow, ctx, args.get("deal_id"))
            deal = d.Deal.from_doc(doc)
            pipeline = await self._pipeline(uow, tenant, deal.pipeline_id)
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
                deal, pipeline, stage_id, uow.now, body.get("lost_reason"), await self._reasons(uow, tenant)
            )
            if moved != deal:
                await self._save_deal(uow, moved, int(doc.get("rev", 0)))
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
            pipelines = await self._pipelines(uow, tenant)
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
                    source = explicit_source or await self._source(uow, tenant, data.get("contact_id"))
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
                await self._insert_deal(uow, deal, external_id=external_id)
                uow.emit_all(tenant, events)
                results.append({"index": i, "id": deal.id, "created": True})
            return {"items": results, "created": sum(1 for r in results if r["created"])}

        return await self.store.atomic(unit, retry_on=(StaleWrite,))

    # ---- inbox accept (event, or RPC) --------------------------------------------------------

    async def _deal_from_inbox(
        self, uow: UnitOfWork, tenant: str, data: Mapping[str, Any], caused_by: Envelope | None
    ) -> d.Deal | None:
        """The deal of an accepted inbox item, once per item: ``None`` when no pipeline applies."""
        item_id = data.get("item_id")
        if not isinstance(item_id, str) or not item_id or not isinstance(data.get("contact_id"), str):
            log.warning("inbox.item_accepted without item_id/contact_id ignored")
            return None
        key = f"{tenant}|inbox|{item_id}"
        existing = await uow.db.keys.find_one({"_id": key}, session=uow.session)
        if existing is not None:
            doc = await uow.db.deals.find_one({"_id": existing["deal_id"]}, session=uow.session)
            return d.Deal.from_doc(doc) if doc else None
        pipelines = await self._pipelines(uow, tenant)
        wanted = data.get("pipeline_id")
        pipeline = next((p for p in pipelines if p.id == wanted), None) if wanted else None
        if wanted and pipeline is None:
            log.warning("inbox accept names an unknown pipeline; no deal", extra={"item_id": item_id})
            return None
        pipeline = pipeline or next((p for p in pipelines if p.default), None)
        if pipeline is None:
            return None
        title = data.get("title")
        body = {
            "title": title.strip()[: d.TITLE_MAX] if isinstance(title, str) and title.strip() else "New deal",
            "contact_id": data["contact_id"],
            "owner_id": data.get("owner_id") or None,
            "pipeline_id": pipeline.id,
            "stage_id": pipeline.first_open_stage.id,
        }
        deal, events = d.create_deal(
            tenant,
            body,
            pipeline,
            new_id,
            uow.now,
            source=await self._source(uow, tenant, data["contact_id"]),
        )
        try:
            await uow.db.keys.insert_one({"_id": key, "deal_id": deal.id}, session=uow.session)
        except DuplicateKeyError as exc:  # a concurrent accept of the same item won
            raise StaleWrite(key) from exc
        await self._insert_deal(uow, deal, inbox_item_id=item_id)
        uow.emit_all(tenant, events, caused_by=caused_by, idempotency_key=f"inbox:{item_id}")
        return deal

    async def on_item_accepted(self, env: Envelope) -> None:
        async def unit(uow: UnitOfWork) -> None:
            await self._deal_from_inbox(uow, env.tenant_id, env.payload, env)

        await self.store.consume(env, "deals.inbox_accepted", unit, retry_on=(StaleWrite,))

    async def accept_inbox_item(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any] | None:
        """The RPC form of ``inbox.item_accepted`` (same idempotency by item id): the deal or null."""
        require_writer(ctx)
        tenant = tenant_of(ctx)

        async def unit(uow: UnitOfWork) -> d.Deal | None:
            return await self._deal_from_inbox(uow, tenant, args, None)

        deal = await self.store.atomic(unit, retry_on=(StaleWrite,))
        return deal.to_public() if deal else None

    # ---- contacts' events --------------------------------------------------------------------

    async def on_contact_created(self, env: Envelope) -> None:
        contact_id = env.payload.get("contact_id")
        source = d.clean_source(env.payload.get("source"))
        if not isinstance(contact_id, str) or source is None:
            return
        tenant = env.tenant_id

        async def unit(uow: UnitOfWork) -> None:
            key = f"{tenant}|{contact_id}"
            known = await uow.db.contact_sources.find_one({"_id": key}, session=uow.session)
            if known is not None and known.get("source"):
                return  # the first touch is kept
            await uow.db.contact_sources.update_one(
                {"_id": key},
                {"$set": {"tenant_id": tenant, "contact_id": contact_id, "source": source}},
                upsert=True,
                session=uow.session,
            )
            docs = await _deals_of_contact(uow, tenant, contact_id, source=None)
            for doc in docs:
                deal, events = d.attribute_source(d.Deal.from_doc(doc), source, uow.now)
                if events:
                    await self._save_deal(uow, deal, int(doc.get("rev", 0)))
                    uow.emit_all(tenant, events, caused_by=env)

        await self.store.consume(env, "deals.contact_created", unit, retry_on=(StaleWrite,))

    async def on_contact_merged(self, env: Envelope) -> None:
        survivor, merged = env.payload.get("contact_id"), env.payload.get("merged_id")
        if not isinstance(survivor, str) or not isinstance(merged, str):
            log.warning("contact.merged without ids ignored", extra={"event_id": env.event_id})
            return
        tenant = env.tenant_id

        async def unit(uow: UnitOfWork) -> None:
            docs = await _deals_of_contact(uow, tenant, merged)
            for doc in docs:
                deal, events = d.repoint_contact(d.Deal.from_doc(doc), merged, survivor, uow.now)
                if events:
                    await self._save_deal(uow, deal, int(doc.get("rev", 0)))
                    uow.emit_all(tenant, events, caused_by=env)

        await self.store.consume(env, "deals.contact_merged", unit, retry_on=(StaleWrite,))

    async def on_contact_erased(self, env: Envelope) -> None:
        contact_id = env.payload.get("contact_id")
        if not isinstance(contact_id, str):
            return
        tenant = env.tenant_id

        async def unit(uow: UnitOfWork) -> None:
            docs = await _deals_of_contact(uow, tenant, contact_id)
            for doc in docs:
                deal, events = d.erase_personal_data(d.Deal.from_doc(doc), uow.now)
                await uow.db.open_tasks.update_many(
                    {"tenant_id": tenant, "deal_id": deal.id}, {"$set": {"title": ""}}, session=uow.session
                )
                if events:
                    await self._save_deal(uow, deal, int(doc.get("rev", 0)))
                    uow.emit_all(tenant, events, caused_by=env)

        await self.store.consume(env, "deals.contact_erased", unit, retry_on=(StaleWrite,))

    # ---- automation rules' commands (from the tasks service) -----------------------------------

    async def on_rule_move_deal(self, env: Envelope) -> None:
        """A rule moves a deal. The resulting events carry the rule's causation so the same rule is
        not triggered again by them for the same deal (loop protection)."""
        await self._rule_change(
            env,
            "deals.rule_move",
            lambda deal, pipeline, reasons, now: d.move(
                deal, pipeline, str(env.payload["stage_id"]), now, None, reasons
            ),
        )

    async def on_rule_assign_owner(self, env: Envelope) -> None:
        if not env.payload.get("deal_id"):
            return  # a contact's owner is the contacts service's business
        await self._rule_change(
            env,
            "deals.rule_assign",
            lambda deal, pipeline, reasons, now: d.update_deal(
                deal, pipeline, {"owner_id": str(env.payload["user_id"])}, now, loss_reasons=reasons
            ),
        )

    async def _rule_change(self, env: Envelope, consumer: str, change: Callable[..., Any]) -> None:
        p = env.payload
        tenant = env.tenant_id
        causation = {k: p.get(k) for k in ("caused_by_rule", "rule_chain", "caused_by_subject")}

        async def unit(uow: UnitOfWork) -> None:
            doc = await uow.db.deals.find_one(
                {"tenant_id": tenant, "_id": p.get("deal_id")}, session=uow.session
            )
            if doc is None:
                log.warning("rule names an unknown deal", extra={"deal_id": p.get("deal_id")})
                return
            deal = d.Deal.from_doc(doc)
            pipeline = await self._pipeline(uow, tenant, deal.pipeline_id)
            try:
                changed, events = change(deal, pipeline, await self._reasons(uow, tenant), uow.now)
            except AppError as exc:  # e.g. a stage of another pipeline, or lost without a reason
                log.warning("rule action refused", extra={"deal_id": deal.id, "code": exc.code})
                return
            if changed != deal:
                await self._save_deal(uow, changed, int(doc.get("rev", 0)))
                events = [{**e, "payload": {**e["payload"], **causation}} for e in events]
                uow.emit_all(tenant, events, caused_by=env, idempotency_key=str(p.get("action_key")))

        await self.store.consume(env, consumer, unit, retry_on=(StaleWrite,))

    # ---- tasks' events: next_action ----------------------------------------------------------

    async def on_task_event(self, env: Envelope) -> None:
        """Keep the task's row (newest event wins: queues per event type may deliver out of
        order) and recompute the next action of the deal(s) it belongs or belonged to."""
        p = env.payload
        task_id = p.get("task_id")
        if not isinstance(task_id, str):
            return
        tenant = env.tenant_id
        at = _micros(env.occurred_at)
        status = str(p.get("status") or "open")
        try:
            due_at = d.parse_datetime(p["due_at"]) if p.get("due_at") else None
        except ValueError:
            due_at = None

        async def unit(uow: UnitOfWork) -> None:
            key = f"{tenant}|{task_id}"
            old = await uow.db.open_tasks.find_one({"_id": key}, session=uow.session)
            if old is not None and (
                old["event_at"] > at
                or (old["event_at"] == at and old["status"] != "open" and status == "open")
            ):
                return  # an older event arriving late
            deal_id = p.get("deal_id") if isinstance(p.get("deal_id"), str) else None
            erased = False
            if deal_id:
                deal_doc = await uow.db.deals.find_one(
                    {"tenant_id": tenant, "_id": deal_id}, {"erased": 1}, session=uow.session
                )
                erased = bool(deal_doc and deal_doc.get("erased"))
            await uow.db.open_tasks.replace_one(
                {"_id": key},
                {
                    "tenant_id": tenant,
                    "task_id": task_id,
                    "deal_id": deal_id,
                    "title": "" if erased else str(p.get("title") or ""),
                    "due_at": due_at,
                    "status": status,
                    "event_at": at,
                },
                upsert=True,
                session=uow.session,
            )
            for affected in {deal_id, old.get("deal_id") if old else None} - {None}:
                await self._refresh_next_action(uow, tenant, str(affected))

        await self.store.consume(env, f"deals.{env.event_type}", unit, retry_on=(StaleWrite,))

    async def _refresh_next_action(self, uow: UnitOfWork, tenant: str, deal_id: str) -> None:
        doc = await uow.db.deals.find_one({"tenant_id": tenant, "_id": deal_id}, session=uow.session)
        if doc is None:
            return
        rows = await uow.db.open_tasks.find(
            {"tenant_id": tenant, "deal_id": deal_id, "status": "open"}, session=uow.session
        ).to_list(None)
        deal = d.Deal.from_doc(doc)
        best = d.pick_next_action(rows)
        if best is not None and deal.erased:
            best = replace(best, title="")
        updated, _ = d.set_next_action(deal, best, uow.now)
        # written even when unchanged: concurrent task events of one deal then conflict and run
        # again instead of each deciding from a snapshot without the other's task
        await self._save_deal(uow, updated, int(doc.get("rev", 0)))
