"""What other services' events do to deals: an accepted inbox item opens one, contacts' created/merged/erased events, automation rules' commands, tasks' events (next_action)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from pymongo.errors import DuplicateKeyError

from services.common.access import require_writer, tenant_of
from services.deals import domain as d
from services.deals.handlers.base import DealsBase, _micros, log
from services.deals.store import StaleWrite
from shared.clock import new_id
from shared.errors import AppError
from shared.events import Envelope
from shared.mongo import UnitOfWork


class EventHandlers(DealsBase):
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
        pipelines = await self.deals.pipelines(uow, tenant)
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
            source=await self.deals.source(uow, tenant, data["contact_id"]),
        )
        try:
            await uow.db.keys.insert_one({"_id": key, "deal_id": deal.id}, session=uow.session)
        except DuplicateKeyError as exc:  # a concurrent accept of the same item won
            raise StaleWrite(key) from exc
        await self.deals.insert_deal(uow, deal, inbox_item_id=item_id)
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
            docs = await self.deals.of_contact(uow, tenant, contact_id, source=None)
            for doc in docs:
                deal, events = d.attribute_source(d.Deal.from_doc(doc), source, uow.now)
                if events:
                    await self.deals.save_deal(uow, deal, int(doc.get("rev", 0)))
                    uow.emit_all(tenant, events, caused_by=env)

        await self.store.consume(env, "deals.contact_created", unit, retry_on=(StaleWrite,))

    async def on_contact_merged(self, env: Envelope) -> None:
        survivor, merged = env.payload.get("contact_id"), env.payload.get("merged_id")
        if not isinstance(survivor, str) or not isinstance(merged, str):
            log.warning("contact.merged without ids ignored", extra={"event_id": env.event_id})
            return
        tenant = env.tenant_id

        async def unit(uow: UnitOfWork) -> None:
            docs = await self.deals.of_contact(uow, tenant, merged)
            for doc in docs:
                deal, events = d.repoint_contact(d.Deal.from_doc(doc), merged, survivor, uow.now)
                if events:
                    await self.deals.save_deal(uow, deal, int(doc.get("rev", 0)))
                    uow.emit_all(tenant, events, caused_by=env)

        await self.store.consume(env, "deals.contact_merged", unit, retry_on=(StaleWrite,))

    async def on_contact_erased(self, env: Envelope) -> None:
        contact_id = env.payload.get("contact_id")
        if not isinstance(contact_id, str):
            return
        tenant = env.tenant_id

        async def unit(uow: UnitOfWork) -> None:
            docs = await self.deals.of_contact(uow, tenant, contact_id)
            for doc in docs:
                deal, events = d.erase_personal_data(d.Deal.from_doc(doc), uow.now)
                await uow.db.open_tasks.update_many(
                    {"tenant_id": tenant, "deal_id": deal.id}, {"$set": {"title": ""}}, session=uow.session
                )
                if events:
                    await self.deals.save_deal(uow, deal, int(doc.get("rev", 0)))
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
            pipeline = await self.deals.pipeline(uow, tenant, deal.pipeline_id)
            try:
                changed, events = change(deal, pipeline, await self.deals.reasons(uow, tenant), uow.now)
            except AppError as exc:  # e.g. a stage of another pipeline, or lost without a reason
                log.warning("rule action refused", extra={"deal_id": deal.id, "code": exc.code})
                return
            if changed != deal:
                await self.deals.save_deal(uow, changed, int(doc.get("rev", 0)))
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
        await self.deals.save_deal(uow, updated, int(doc.get("rev", 0)))
