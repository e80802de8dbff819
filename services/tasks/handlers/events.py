"""Other services' events: automation rules react to them; users, merges and erasures are followed."""

from __future__ import annotations

from pymongo.errors import DuplicateKeyError

from services.tasks import domain as d
from services.tasks import rules as r
from services.tasks.handlers.base import (
    CONSUMER_ERASED,
    CONSUMER_MERGED,
    CONSUMER_RULES,
    CONSUMER_USERS,
    ERASED_TITLE,
    RULE_COMMANDS,
    TasksBase,
    _dedupe_key,
    _event_time,
    log,
)
from shared.clock import new_id
from shared.events import Envelope
from shared.mongo import UnitOfWork


class EventHandlers(TasksBase):
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
