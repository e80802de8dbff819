"""The read models: every public event the reports need, kept in the service's own collections
(idempotent: each event once, in the same transaction as its effect)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.clock import as_utc
from shared.events import Envelope
from shared.mongo import UnitOfWork
from shared.service import Service

CONSUMER = "analytics.readmodel"
MAX_ROWS = 200_000


def _at(value: Any) -> datetime | None:
    if value is None:
        return None
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


class ReadModelHandlers(Service):
    name = "analytics"

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
