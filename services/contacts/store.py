"""Every database call of the contacts service.

:class:`ContactsStore` reads outside a transaction and opens units of work; :class:`ContactsTx` is
one unit of work: its reads and writes share the transaction, and what it emits is written to the
outbox in it (see :mod:`shared.mongo`). Every read filters on exactly the fields of an index (a
prefix of it) and checks anything else (state, owner) in Python: planners then have one choice,
the index (the local MongoDB-protocol server scans the collection when a filter has fields beyond
an index's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from services.contacts.domain.cards import IdentityRace
from shared.clock import as_utc
from shared.events import Envelope
from shared.mongo import Store, UnitOfWork

T = TypeVar("T")
Doc = dict[str, Any]

CANDIDATE_SCAN = 50
LIST_SCAN_MAX = 5000
"""A filtered contact list (phone, email, name prefix, company, owner) reads at most this many index
entries per page; the plain list reads the (tenant_id, _id) index in order."""
EXPORT_TIMELINE_MAX = 50_000
TIMELINE_ORDER = [("occurred_at", DESCENDING), ("_id", DESCENDING)]


def sender_filter(phones: list[str], emails: list[str]) -> list[Doc]:
    """``$or`` clauses of inbox items from a sender with one of these phones or emails."""
    ors: list[Doc] = []
    if phones:
        ors.append({"sender.phones": {"$in": phones}})
    if emails:
        ors.append({"sender.emails": {"$in": emails}})
    return ors


def identity_ids(
    tenant: str, phones: list[str], emails: list[str], handles: Sequence[str] = ()
) -> dict[str, tuple[str, str]]:
    """Claim ids of identities: ``{"<tenant>:p:<phone>": ("phones", phone), ...}``."""
    wanted = {f"{tenant}:p:{p}": ("phones", p) for p in phones}
    wanted.update({f"{tenant}:e:{e}": ("emails", e) for e in emails})
    wanted.update({f"{tenant}:h:{h}": ("handles", h) for h in handles})
    return wanted


class ContactsTx:
    """One unit of work of the contacts service."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.db = uow.db
        self.s = uow.session

    @property
    def now(self) -> datetime:
        return self.uow.now

    def emit(
        self,
        event_type: str,
        tenant_id: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        caused_by: Envelope | None = None,
    ) -> None:
        self.uow.emit(event_type, tenant_id, payload, idempotency_key=idempotency_key, caused_by=caused_by)

    # ---- contacts ----

    async def contact(self, tenant: str, contact_id: str) -> Doc | None:
        return await self.db.contacts.find_one({"_id": contact_id, "tenant_id": tenant}, session=self.s)

    async def resolve(self, tenant: str, contact_id: str) -> Doc | None:
        """The active contact an id stands for, following merges."""
        for _ in range(10):
            doc = await self.contact(tenant, contact_id)
            if doc is None:
                return None
            if doc.get("state") == "merged" and doc.get("merged_into"):
                contact_id = doc["merged_into"]
                continue
            return doc if doc.get("state") == "active" else None
        return None

    async def find_candidates(
        self, tenant: str, phones: list[str], emails: list[str], handles: list[str] | None = None
    ) -> list[Doc]:
        """Active contacts sharing a phone, an email or a messenger handle, most recently active
        first (one indexed query per identity kind)."""
        ors: list[Doc] = []
        if phones:
            ors.append({"phones": {"$in": phones}})
        if emails:
            ors.append({"emails": {"$in": emails}})
        if handles:
            ors.append({"handles": {"$in": handles}})
        found: dict[str, Doc] = {}
        for clause in ors:
            cursor = self.db.contacts.find({"tenant_id": tenant, **clause}, session=self.s).limit(
                CANDIDATE_SCAN
            )
            for doc in await cursor.to_list(length=CANDIDATE_SCAN):
                if doc.get("state") == "active":
                    found[doc["_id"]] = doc
        return sorted(
            found.values(), key=lambda d: as_utc(d.get("last_activity_at") or d["created_at"]), reverse=True
        )

    async def insert_contact(self, doc: Doc) -> None:
        await self.db.contacts.insert_one(doc, session=self.s)

    async def set_contact(self, tenant: str, contact_id: str, fields: Doc) -> None:
        await self.db.contacts.update_one(
            {"_id": contact_id, "tenant_id": tenant}, {"$set": fields}, session=self.s
        )

    async def set_contacts(self, tenant: str, ids: list[str], fields: Doc) -> None:
        await self.db.contacts.update_many(
            {"tenant_id": tenant, "_id": {"$in": ids}}, {"$set": fields}, session=self.s
        )

    async def touch_contact(self, tenant: str, contact_id: str, at: datetime) -> None:
        """The contact's last activity is at least ``at``."""
        await self.db.contacts.update_one(
            {"_id": contact_id, "tenant_id": tenant}, {"$max": {"last_activity_at": at}}, session=self.s
        )

    async def repoint_merged(self, tenant: str, old: str, new: str) -> None:
        """Whatever pointed at ``old`` (merged cards, timeline, inbox, identity claims) points at
        ``new``; recorded duplicates naming ``old`` are dropped."""
        await self.db.contacts.update_many(
            {"tenant_id": tenant, "merged_into": old}, {"$set": {"merged_into": new}}, session=self.s
        )
        await self.db.timeline.update_many(
            {"tenant_id": tenant, "contact_id": old}, {"$set": {"contact_id": new}}, session=self.s
        )
        await self.db.inbox.update_many(
            {"tenant_id": tenant, "contact_id": old}, {"$set": {"contact_id": new}}, session=self.s
        )
        await self.db.identities.update_many(
            {"contact_id": old}, {"$set": {"contact_id": new}}, session=self.s
        )
        await self.forget_duplicates(tenant, old)

    # ---- identity claims ----

    async def claim_identities(
        self,
        tenant: str,
        contact_id: str,
        phones: list[str],
        emails: list[str],
        handles: list[str] | None = None,
    ) -> None:
        """Claim phones/emails/handles for ``contact_id`` (unique ids), so two replicas capturing the
        same new person at once cannot both create it. A claim whose contact no longer holds that
        identity (edited, merged away, erased) is taken over; a live claim raises
        :class:`IdentityRace` (another capture won: the retry finds its contact)."""
        wanted = identity_ids(tenant, phones, emails, handles or ())
        if not wanted:
            return
        claims = await self.db.identities.find({"_id": {"$in": list(wanted)}}, session=self.s).to_list(
            length=len(wanted)
        )
        for claim in claims:
            field, value = wanted[claim["_id"]]
            if claim["contact_id"] == contact_id:
                continue
            holder = await self.db.contacts.find_one(
                {"_id": claim["contact_id"], "tenant_id": tenant}, {"state": 1, field: 1}, session=self.s
            )
            if holder is not None and holder.get("state") == "active" and value in holder.get(field, []):
                raise IdentityRace()
            await self.db.identities.update_one(
                {"_id": claim["_id"]}, {"$set": {"contact_id": contact_id}}, session=self.s
            )
        fresh = [i for i in wanted if i not in {c["_id"] for c in claims}]
        if fresh:
            try:
                await self.db.identities.insert_many(
                    [{"_id": i, "contact_id": contact_id} for i in fresh], session=self.s
                )
            except DuplicateKeyError as exc:
                raise IdentityRace() from exc

    async def release_identities(self, contact_ids: list[str], keep: list[str] | None = None) -> None:
        """Drop the claims of these contacts (but the ids in ``keep``)."""
        flt: Doc = {"contact_id": {"$in": contact_ids}}
        if keep is not None:
            flt["_id"] = {"$nin": keep}
        await self.db.identities.delete_many(flt, session=self.s)

    async def note_possible_duplicate(self, tenant: str, ids: list[str]) -> None:
        await self.db.possible_duplicates.update_one(
            {"_id": f"{tenant}:{'|'.join(ids)}"},
            {
                "$setOnInsert": {
                    "tenant_id": tenant,
                    "ids": ids,
                    "created_at": self.now,
                    "reason": "shared identity",
                }
            },
            upsert=True,
            session=self.s,
        )

    async def forget_duplicates(self, tenant: str, contact_id: str) -> None:
        await self.db.possible_duplicates.delete_many(
            {"tenant_id": tenant, "ids": contact_id}, session=self.s
        )

    # ---- timeline ----

    async def timeline_item(self, tenant: str, subject_key: str) -> Doc | None:
        return await self.db.timeline.find_one(
            {"tenant_id": tenant, "subject_key": subject_key}, session=self.s
        )

    async def insert_timeline(self, doc: Doc) -> bool:
        """False when an item of that subject exists already."""
        try:
            await self.db.timeline.insert_one(doc, session=self.s)
        except DuplicateKeyError:
            return False
        return True

    async def fold_timeline(self, item_id: str, fields: Doc, event_key: str) -> None:
        await self.db.timeline.update_one(
            {"_id": item_id},
            {"$set": {**fields, "updated_at": self.now}, "$addToSet": {"event_keys": event_key}},
            session=self.s,
        )

    async def clear_timeline(self, tenant: str, contact_id: str) -> None:
        """Erasure: items keep kind, direction, time and channel, not what was said."""
        await self.db.timeline.update_many(
            {"tenant_id": tenant, "contact_id": contact_id},
            {"$set": {"summary": "", "data": {}, "erased": True, "updated_at": self.now}},
            session=self.s,
        )

    # ---- inbox ----

    async def inbox_item(self, tenant: str, subject_key: str) -> Doc | None:
        return await self.db.inbox.find_one(
            {"tenant_id": tenant, "interaction.subject_key": subject_key}, session=self.s
        )

    async def pending_item(self, item_id: str) -> Doc | None:
        return await self.db.inbox.find_one({"_id": item_id, "status": "pending"}, session=self.s)

    async def insert_inbox(self, doc: Doc) -> None:
        await self.db.inbox.insert_one(doc, session=self.s)

    async def set_inbox_interaction(self, item_id: str, interaction: Doc) -> None:
        await self.db.inbox.update_one(
            {"_id": item_id}, {"$set": {"interaction": interaction}}, session=self.s
        )

    async def resolve_pending(self, item_id: str, fields: Doc) -> bool:
        """Close a pending item; False when it was not pending any more."""
        res = await self.db.inbox.update_one(
            {"_id": item_id, "status": "pending"}, {"$set": fields}, session=self.s
        )
        return bool(res.modified_count == 1)

    async def pending_from(self, tenant: str, phones: list[str], emails: list[str], but: str) -> list[Doc]:
        """Other pending items of a sender with one of these phones or emails."""
        ors = sender_filter(phones, emails)
        if not ors:
            return []
        return await self.db.inbox.find(
            {"tenant_id": tenant, "status": "pending", "_id": {"$ne": but}, "$or": ors}, session=self.s
        ).to_list(length=500)

    async def clear_inbox(self, tenant: str, ors: list[Doc]) -> None:
        """Erasure: the items lose the sender and the content."""
        await self.db.inbox.update_many(
            {"tenant_id": tenant, "$or": ors},
            {
                "$set": {
                    "sender": {"name": None, "phones": [], "emails": [], "raw_phones": []},
                    "utm": {},
                    "interaction.summary": "",
                    "interaction.data": {},
                    "erased": True,
                }
            },
            session=self.s,
        )

    # ---- companies ----

    async def insert_company(self, doc: Doc) -> None:
        await self.db.companies.insert_one(doc, session=self.s)

    async def set_company(self, company_id: str, fields: Doc) -> None:
        await self.db.companies.update_one({"_id": company_id}, {"$set": fields}, session=self.s)


class ContactsStore:
    """The contacts database: reads, and units of work (:meth:`atomic`, :meth:`consume`)."""

    def __init__(self, base: Store) -> None:
        self.base = base

    @property
    def db(self) -> Any:
        return self.base.db

    def now(self) -> datetime:
        return self.base.clock.now()

    async def atomic(
        self,
        fn: Callable[[ContactsTx], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        attempts: int = 5,
    ) -> T:
        return await self.base.atomic(lambda uow: fn(ContactsTx(uow)), retry_on=retry_on, attempts=attempts)

    async def consume(
        self,
        env: Envelope,
        consumer: str,
        fn: Callable[[ContactsTx], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        attempts: int = 5,
    ) -> T | None:
        return await self.base.consume(
            env, consumer, lambda uow: fn(ContactsTx(uow)), retry_on=retry_on, attempts=attempts
        )

    # ---- contacts ----

    async def contact(self, tenant: str, contact_id: str) -> Doc | None:
        return await self.db.contacts.find_one({"_id": contact_id, "tenant_id": tenant})

    async def contacts_page(
        self, flt: Doc, wanted: Callable[[Doc], bool], limit: int, last: str | None
    ) -> list[Doc]:
        """Up to ``limit + 1`` contacts matching ``flt`` (the fields of one index) and ``wanted``,
        newest first. The plain list (tenant only) walks (tenant_id, _id) from ``last`` down."""
        docs: list[Doc] = []
        if len(flt) == 1:
            if last is not None:
                flt = {**flt, "_id": {"$lt": last}}
            cursor = self.db.contacts.find(flt).sort("_id", DESCENDING).batch_size(limit + 1)
            try:
                async for doc in cursor:
                    if wanted(doc):
                        docs.append(doc)
                        if len(docs) > limit:
                            break
            finally:
                await cursor.close()
            return docs
        async for doc in self.db.contacts.find(flt).limit(LIST_SCAN_MAX):
            if wanted(doc):
                docs.append(doc)
        docs.sort(key=lambda d: d["_id"], reverse=True)
        return docs[: limit + 1]

    async def contacts_where(self, tenant: str, flt: Doc, limit: int = 200) -> list[Doc]:
        return await self.db.contacts.find({"tenant_id": tenant, **flt}).limit(limit).to_list(length=limit)

    async def identities_of(self, tenant: str, ids: list[str]) -> list[Doc]:
        """The phones, emails and handles of these contacts."""
        return await self.db.contacts.find(
            {"tenant_id": tenant, "_id": {"$in": ids}}, {"phones": 1, "emails": 1, "handles": 1}
        ).to_list(None)

    async def recorded_duplicates(self, tenant: str, contact_id: str) -> list[Doc]:
        return await self.db.possible_duplicates.find({"tenant_id": tenant, "ids": contact_id}).to_list(
            length=50
        )

    # ---- timeline ----

    async def timeline_page(
        self, tenant: str, contact_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Doc]:
        """Up to ``limit + 1`` items, newest first, after the cursor's ``(occurred_at, id)``."""
        flt: Doc = {"tenant_id": tenant, "contact_id": contact_id}
        docs: list[Doc] = []
        if after:
            at, last_id = after
            ties = (
                await self.db.timeline.find({**flt, "occurred_at": at})
                .sort(TIMELINE_ORDER)
                .to_list(length=None)
            )
            docs = [d for d in ties if d["_id"] < last_id][: limit + 1]
            flt["occurred_at"] = {"$lt": at}
        if len(docs) <= limit:
            want = limit + 1 - len(docs)
            docs += await self.db.timeline.find(flt).sort(TIMELINE_ORDER).limit(want).to_list(length=want)
        return docs

    async def whole_timeline(self, tenant: str, contact_id: str) -> list[Doc]:
        return await (
            self.db.timeline.find({"tenant_id": tenant, "contact_id": contact_id})
            .sort(TIMELINE_ORDER)
            .limit(EXPORT_TIMELINE_MAX)
            .to_list(length=EXPORT_TIMELINE_MAX)
        )

    # ---- inbox ----

    async def inbox_page(self, flt: Doc, limit: int) -> list[Doc]:
        return (
            await self.db.inbox.find(flt).sort("_id", DESCENDING).limit(limit + 1).to_list(length=limit + 1)
        )

    async def inbox_one(self, flt: Doc, item_id: str) -> Doc | None:
        return await self.db.inbox.find_one({**flt, "_id": item_id})

    async def inbox_of(self, tenant: str, ors: list[Doc]) -> list[Doc]:
        return await self.db.inbox.find({"tenant_id": tenant, "$or": ors}).to_list(length=1000)

    # ---- companies ----

    async def company(self, flt: Doc, company_id: str) -> Doc | None:
        return await self.db.companies.find_one({**flt, "_id": company_id})

    async def companies_page(self, flt: Doc, limit: int) -> list[Doc]:
        return (
            await self.db.companies.find(flt)
            .sort("_id", DESCENDING)
            .limit(limit + 1)
            .to_list(length=limit + 1)
        )

    # ---- custom fields ----

    async def custom_fields(self, tenant: str, entity: str | None = None) -> list[Doc]:
        flt: Doc = {"tenant_id": tenant}
        if entity:
            flt["entity"] = entity
        return await self.db.custom_fields.find(flt).sort([("entity", 1), ("key", 1)]).to_list(length=1000)

    async def insert_custom_field(self, doc: Doc) -> bool:
        """False when the tenant has a field of that entity and key."""
        try:
            await self.db.custom_fields.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True
