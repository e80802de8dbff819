"""Pipelines, stages and loss reasons: read, create, edit (moving or re-weighting the deals an edit touches, in batches), delete."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from services.common.access import require_admin, tenant_of
from services.deals import domain as d
from services.deals.handlers.base import BATCH, DealsBase
from services.deals.store import IX_PIPELINE_STAGE, StaleWrite
from shared.clock import new_id
from shared.mongo import UnitOfWork


class PipelineHandlers(DealsBase):
    # ---- pipelines ----------------------------------------------------------------------------

    async def list_pipelines(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        pipelines = await self.deals.pipelines(None, tenant_of(ctx))
        return {"items": [p.to_public() for p in pipelines], "next_cursor": None}

    async def get_pipeline(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return (await self.deals.pipeline(None, tenant_of(ctx), args.get("pipeline_id"))).to_public()

    async def create_pipeline(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        body = dict(args.get("body") or {})

        async def unit(uow: UnitOfWork) -> d.Pipeline:
            others = await self.deals.pipelines(uow, tenant)
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
        pipeline = await self.deals.pipeline(None, tenant, args.get("pipeline_id"))
        return await self._edit_pipeline(
            pipeline,
            lambda p, counts, now: d.edit_pipeline(p, changes, new_id, now, counts),
        )

    async def delete_stage(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        pipeline = await self.deals.pipeline(None, tenant, args.get("pipeline_id"))
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
            current = await self.deals.pipeline(uow, tenant, pipeline_id)
            held = await uow.db.deals.count_documents(
                {"tenant_id": tenant, "pipeline_id": current.id}, session=uow.session
            )
            promoted, events = d.delete_pipeline(
                current, await self.deals.pipelines(uow, tenant), held, uow.now
            )
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
            current = await self.deals.pipeline(uow, tenant, pipeline.id)
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
                await self._demote(uow, await self.deals.pipelines(uow, tenant), result.pipeline.id)
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
                await self.deals.save_deal(u, moved, int(doc.get("rev", 0)))
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
                await self.deals.save_deal(uow, synced, int(doc.get("rev", 0)))
                uow.emit_all(pipeline.tenant_id, events)
            return len(docs)

        return await self.store.atomic(unit, retry_on=(StaleWrite,))

    # ---- loss reasons -------------------------------------------------------------------------

    async def list_loss_reasons(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        reasons = await self.deals.reasons(None, tenant_of(ctx))
        return {"items": [{"name": r} for r in reasons], "next_cursor": None}

    async def add_loss_reason(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        name = (args.get("body") or {}).get("name")

        async def unit(uow: UnitOfWork) -> str:
            reasons = d.add_loss_reason(await self.deals.reasons(uow, tenant), name)
            await uow.db.loss_reasons.update_one(
                {"_id": tenant},
                {"$set": {"reasons": reasons, "updated_at": uow.now}},
                upsert=True,
                session=uow.session,
            )
            uow.emit("loss_reason.added", tenant, {"name": reasons[-1]})
            return reasons[-1]

        return {"name": await self.store.atomic(unit, retry_on=(StaleWrite,))}
