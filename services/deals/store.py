"""Every database call of the deals service that its handlers share: pipelines, loss reasons,
first-touch sources, a deal's optimistic write, and the indexes the listings use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from services.common.access import read_filter, write_filter
from services.deals import domain as d
from shared.errors import Forbidden, NotFound
from shared.mongo import Indexes, Store, UnitOfWork

IX_PIPELINE_STAGE = [("tenant_id", ASCENDING), ("pipeline_id", ASCENDING), ("stage_id", ASCENDING), ("_id", DESCENDING)]  # fmt: skip
IX_PIPELINE = [("tenant_id", ASCENDING), ("pipeline_id", ASCENDING), ("_id", DESCENDING)]
IX_CONTACT = [("tenant_id", ASCENDING), ("contact_id", ASCENDING), ("_id", DESCENDING)]
IX_OWNER = [("tenant_id", ASCENDING), ("owner_id", ASCENDING), ("_id", DESCENDING)]
IX_TENANT = [("tenant_id", ASCENDING), ("_id", DESCENDING)]

INDEXES: Indexes = {
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


class StaleWrite(Exception):
    """A deal changed between our read and our write; the unit is run again."""


def listing_hint(filters: Mapping[str, Any]) -> list[tuple[str, int]]:
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


class DealsStore:
    """The deals database as the service's handlers use it."""

    def __init__(self, base: Store) -> None:
        self.base = base

    @property
    def db(self) -> Any:
        return self.base.db

    async def pipelines(self, uow: UnitOfWork | None, tenant: str) -> list[d.Pipeline]:
        session = uow.session if uow else None
        docs = (
            await self.db.pipelines.find({"tenant_id": tenant}, session=session)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .to_list(None)
        )
        return [d.Pipeline.from_doc(doc) for doc in docs]

    async def pipeline(self, uow: UnitOfWork | None, tenant: str, pipeline_id: Any) -> d.Pipeline:
        if not isinstance(pipeline_id, str):
            raise NotFound("pipeline")
        doc = await self.db.pipelines.find_one(
            {"tenant_id": tenant, "_id": pipeline_id}, session=uow.session if uow else None
        )
        if doc is None:
            raise NotFound("pipeline")
        return d.Pipeline.from_doc(doc)

    async def reasons(self, uow: UnitOfWork | None, tenant: str) -> list[str]:
        doc = await self.db.loss_reasons.find_one({"_id": tenant}, session=uow.session if uow else None)
        return list(doc["reasons"]) if doc else []

    async def source(self, uow: UnitOfWork, tenant: str, contact_id: Any) -> dict[str, Any] | None:
        """The contact's first-touch source for a deal being created, or ``None`` if unknown yet.

        It also writes the contact's ``contact_sources`` row, as the ``contact.created`` handler does:
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

    async def insert_deal(self, uow: UnitOfWork, deal: d.Deal, **extra: Any) -> None:
        await uow.db.deals.insert_one({**deal.to_doc(), "rev": 0, **extra}, session=uow.session)

    async def save_deal(self, uow: UnitOfWork, deal: d.Deal, rev: int) -> None:
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

    async def writable_deal(self, uow: UnitOfWork, ctx: dict[str, Any], deal_id: Any) -> dict[str, Any]:
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

    async def of_contact(
        self, uow: UnitOfWork, tenant: str, contact_id: str, **also: Any
    ) -> list[dict[str, Any]]:
        """A contact's deals (that also match ``also``), read in ``uow`` through the contact index."""
        flt = {"tenant_id": tenant, "contact_id": contact_id, **also}
        return await uow.db.deals.find(flt, session=uow.session).hint(IX_CONTACT).to_list(None)
