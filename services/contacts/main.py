"""The contacts service: customer cards, identity resolution, inbox and timelines."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any, ClassVar

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from services.common.access import must, read_filter, require_admin, tenant_of, write_filter
from services.contacts import csvio
from services.contacts.activity import DEAL_EVENTS, TASK_EVENTS, activity_item
from services.contacts.capture import (
    IdentityRace,
    capture,
    create_contact_doc,
    find_candidates,
)
from services.contacts.custom_fields import check_definition, definition_view, validate_custom
from services.contacts.model import (
    company_view,
    contact_view,
    inbox_view,
    name_key,
    normalize_identities,
    search_words,
    source_of,
    timeline_view,
)
from shared.clock import as_utc, new_id
from shared.errors import Conflict, Gone, NotFound, ValidationFailed
from shared.events import Envelope
from shared.mongo import UnitOfWork
from shared.normalize import (
    IDENTITY_KEY_PURPOSE,
    clean_text,
    identity_digest,
    normalize_email,
    phone_search_key,
)
from shared.pagination import clamp_limit, decode_cursor, page
from shared.service import Service

log = logging.getLogger(__name__)

CONSUMER_CAPTURE = "contacts.capture"
CONSUMER_ACTIVITY = "contacts.activity"
INBOX_STATUSES = ("pending", "accepted", "rejected", "linked")
MANUAL_KINDS = ("note", "call", "meeting", "email")
EXPORT_TIMELINE_MAX = 50_000


LIST_SCAN_MAX = 5000
"""A filtered contact list (phone, email, name prefix, company, owner) reads at most this many index
entries per page; the plain list reads the (tenant_id, _id) index in order."""


def _allowed(flt: dict[str, Any], doc: dict[str, Any], owner_field: str = "owner_id") -> bool:
    """``doc`` passes an access filter of :mod:`services.common.access` (checked in Python, so the
    query itself filters on index fields only)."""
    if doc.get("tenant_id") != flt["tenant_id"]:
        return False
    rule = flt.get(owner_field)
    return rule is None or doc.get(owner_field) in rule["$in"]


def _prefix_range(term: str) -> dict[str, str]:
    """A prefix match as an index range (no regex: every engine uses the index bounds)."""
    return {"$gte": term, "$lt": term + "\U0010ffff"}


def _region(ctx: dict[str, Any]) -> str:
    return str((ctx.get("settings") or {}).get("default_region") or "RU")


def _sender_filter(phones: list[str], emails: list[str]) -> list[dict[str, Any]]:
    ors: list[dict[str, Any]] = []
    if phones:
        ors.append({"sender.phones": {"$in": phones}})
    if emails:
        ors.append({"sender.emails": {"$in": emails}})
    return ors


PERSON_CLEARED: dict[str, Any] = {
    "name": None,
    "name_key": None,
    "phones": [],
    "emails": [],
    "raw_phones": [],
    "handles": [],
    "custom": {},
    "tags": [],
    "search": [],
}
"""What a card that was merged away or erased no longer holds: everything that says who it was."""


class ContactsService(Service):
    name = "contacts"
    indexes: ClassVar = {
        "contacts": [
            IndexModel([("tenant_id", ASCENDING), ("phones", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("emails", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("handles", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("search", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("name_key", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("owner_id", ASCENDING), ("_id", DESCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("company_id", ASCENDING), ("_id", DESCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("_id", DESCENDING)]),
            IndexModel([("merged_into", ASCENDING)], sparse=True),
        ],
        "timeline": [
            IndexModel([("tenant_id", ASCENDING), ("subject_key", ASCENDING)], unique=True),
            IndexModel(
                [
                    ("tenant_id", ASCENDING),
                    ("contact_id", ASCENDING),
                    ("occurred_at", DESCENDING),
                    ("_id", DESCENDING),
                ]
            ),
        ],
        "inbox": [
            IndexModel([("tenant_id", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("_id", DESCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("interaction.subject_key", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("sender.phones", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("sender.emails", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("contact_id", ASCENDING)]),
        ],
        "identities": [IndexModel([("contact_id", ASCENDING)])],
        "possible_duplicates": [IndexModel([("tenant_id", ASCENDING), ("ids", ASCENDING)])],
        "companies": [
            IndexModel([("tenant_id", ASCENDING), ("_id", DESCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("search", ASCENDING)]),
        ],
        "custom_fields": [
            IndexModel([("tenant_id", ASCENDING), ("entity", ASCENDING), ("key", ASCENDING)], unique=True)
        ],
    }

    def setup(self) -> None:
        self.on("interaction.captured", self.on_captured)
        self.on("rule.assign_owner_requested", self.on_rule_assign_owner)
        for event_type in (*DEAL_EVENTS, *TASK_EVENTS):
            self.on(event_type, self.on_activity)
        for name in (
            "list_contacts",
            "get_contact",
            "create_contact",
            "update_contact",
            "delete_contact",
            "timeline",
            "add_interaction",
            "duplicates",
            "merge_contacts",
            "export_contact",
            "erase_contact",
            "import_contacts",
            "create_company",
            "list_companies",
            "get_company",
            "update_company",
            "create_custom_field",
            "list_custom_fields",
            "validate_custom",
            "list_inbox",
            "get_inbox_item",
            "accept_inbox_item",
            "link_inbox_item",
            "reject_inbox_item",
        ):
            self.rpc.method(name)(getattr(self, name))

    # ---- events -----------------------------------------------------------------------------

    async def on_captured(self, env: Envelope) -> None:
        for attempt in range(3):
            try:
                await self.store.consume(env, CONSUMER_CAPTURE, lambda uow: capture(uow, env))
                return
            except IdentityRace:
                if attempt == 2:
                    raise

    async def on_rule_assign_owner(self, env: Envelope) -> None:
        """An automation rule gives a contact to a user (a deal's owner is the deals service's)."""
        p = env.payload
        if not p.get("contact_id") or p.get("deal_id"):
            return
        causation = {k: p.get(k) for k in ("caused_by_rule", "rule_chain", "caused_by_subject")}

        async def unit(uow: UnitOfWork) -> None:
            contact = await self._resolve(uow, env.tenant_id, str(p["contact_id"]))
            if contact is None or contact.get("owner_id") == p.get("user_id"):
                return
            await uow.db.contacts.update_one(
                {"_id": contact["_id"], "tenant_id": env.tenant_id},
                {"$set": {"owner_id": p["user_id"], "updated_at": uow.now}},
                session=uow.session,
            )
            uow.emit(
                "contact.updated",
                env.tenant_id,
                {"contact_id": contact["_id"], "owner_id": p["user_id"], "fields": ["owner_id"], **causation},
                caused_by=env,
                idempotency_key=str(p.get("action_key")),
            )

        await self.store.consume(env, "contacts.rule_assign_owner", unit)

    async def on_activity(self, env: Envelope) -> None:
        """A deal or task event naming a contact becomes an item on that contact's timeline."""
        item = activity_item(env.event_type, env.payload, env.occurred_at)
        if item is None:
            return

        async def unit(uow: UnitOfWork) -> None:
            contact = await self._resolve(uow, env.tenant_id, str(env.payload["contact_id"]))
            if contact is None:
                return  # unknown, deleted or erased: nothing to show it on
            doc = {
                "_id": new_id(),
                "tenant_id": env.tenant_id,
                "contact_id": contact["_id"],
                "channel_id": None,
                "subject_key": f"event:{env.event_id}",
                "event_keys": [env.event_id],
                "created_at": uow.now,
                "updated_at": uow.now,
                **item,
            }
            try:
                await uow.db.timeline.insert_one(doc, session=uow.session)
            except DuplicateKeyError:
                return

        await self.store.consume(env, CONSUMER_ACTIVITY, unit)

    async def _resolve(self, uow: UnitOfWork, tenant: str, contact_id: str) -> dict[str, Any] | None:
        """The active contact an id stands for, following merges."""
        for _ in range(10):
            doc = await uow.db.contacts.find_one(
                {"_id": contact_id, "tenant_id": tenant}, session=uow.session
            )
            if doc is None:
                return None
            if doc.get("state") == "merged" and doc.get("merged_into"):
                contact_id = doc["merged_into"]
                continue
            return doc if doc.get("state") == "active" else None
        return None

    # ---- helpers ----------------------------------------------------------------------------

    async def _contact(self, flt: dict[str, Any], contact_id: str, depth: int = 0) -> dict[str, Any]:
        """The active contact ``contact_id`` stands for (following merges) if ``flt`` allows it:
        404 when unknown or not allowed, 410 when erased."""
        doc = await self.db.contacts.find_one({"_id": contact_id, "tenant_id": flt["tenant_id"]})
        if doc is None or not _allowed(flt, doc):
            raise NotFound("contact")
        if doc.get("state") == "erased":
            raise Gone("This contact was erased.")
        if doc.get("state") == "merged" and doc.get("merged_into") and depth < 10:
            return await self._contact(flt, doc["merged_into"], depth + 1)
        if doc.get("state") != "active":
            raise NotFound("contact")
        return doc

    async def _visible(self, ctx: dict[str, Any], contact_id: str) -> dict[str, Any]:
        return await self._contact(read_filter(ctx), contact_id)

    async def _writable(self, ctx: dict[str, Any], contact_id: str) -> dict[str, Any]:
        return await self._contact(write_filter(ctx), contact_id)

    async def _fields(self, tenant: str, entity: str) -> list[dict[str, Any]]:
        return await self.db.custom_fields.find({"tenant_id": tenant, "entity": entity}).to_list(length=500)

    async def _check_company(self, tenant: str, company_id: str | None, errors: dict[str, str]) -> None:
        if company_id and not await self.db.companies.find_one({"tenant_id": tenant, "_id": company_id}):
            errors["company_id"] = "is not a company of this tenant"

    @staticmethod
    def _owner_for(ctx: dict[str, Any], owner: str | None, errors: dict[str, str]) -> str | None:
        if ctx.get("role") == "admin":
            return owner
        owner = owner or ctx.get("user_id")
        if owner != ctx.get("user_id"):
            errors["owner_id"] = "a manager may only assign records to itself"
        return owner

    # ---- queries ----------------------------------------------------------------------------

    async def list_contacts(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Newest first. The query filters on the fields of one index; state, visibility, further
        name words and the cursor are checked on the documents it returns."""
        limit = clamp_limit(args.get("limit"))
        filters = args.get("filters") or {}
        region = _region(ctx)
        rf = read_filter(ctx)
        flt: dict[str, Any] = {"tenant_id": rf["tenant_id"]}
        more_words: list[str] = []
        if filters.get("phone"):
            key = phone_search_key(filters["phone"], region)
            flt["phones"] = key if key and key.startswith("+") else "\x00no-match"
        elif filters.get("email"):
            flt["emails"] = normalize_email(filters["email"]) or filters["email"].strip().lower()
        elif filters.get("q"):
            q = filters["q"].strip().lower().replace("ё", "е")
            digits = re.sub(r"[\s()\-+.]", "", q)
            words = [q] if "@" in q else q.split()
            if digits.isdigit():
                words = [digits]
            flt["search"] = _prefix_range(words[0])
            more_words = words[1:5]  # "иван пет": every word starts some word of the contact
        elif filters.get("company_id"):
            flt["company_id"] = filters["company_id"]
        elif filters.get("owner_id"):
            flt["owner_id"] = filters["owner_id"]
        after = decode_cursor(args.get("cursor"))
        last = str(after[0]) if after else None
        email = (
            (normalize_email(filters["email"]) or filters["email"].strip().lower())
            if filters.get("email")
            else None
        )

        def wanted(doc: dict[str, Any]) -> bool:
            if doc.get("state") != "active" or not _allowed(rf, doc):
                return False
            if last is not None and doc["_id"] >= last:
                return False
            for key in ("company_id", "owner_id"):
                if filters.get(key) and doc.get(key) != filters[key]:
                    return False
            if email and "phones" in flt and email not in doc.get("emails", []):
                return False  # phone and email both given: the query used the phone
            search = doc.get("search", [])
            return all(any(w.startswith(m) for w in search) for m in more_words)

        docs: list[dict[str, Any]] = []
        if len(flt) == 1:  # the plain list: walk (tenant_id, _id) newest first
            if last is not None:
                flt["_id"] = {"$lt": last}
            cursor = self.db.contacts.find(flt).sort("_id", DESCENDING).batch_size(limit + 1)
            try:
                async for doc in cursor:
                    if wanted(doc):
                        docs.append(doc)
                        if len(docs) > limit:
                            break
            finally:
                await cursor.close()
        else:
            async for doc in self.db.contacts.find(flt).limit(LIST_SCAN_MAX):
                if wanted(doc):
                    docs.append(doc)
            docs.sort(key=lambda d: d["_id"], reverse=True)
        return page([contact_view(d) for d in docs[: limit + 1]], limit, lambda it: [it["id"]])

    async def get_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        doc = await self._visible(ctx, args["contact_id"])
        view = contact_view(doc)
        if doc["_id"] != args["contact_id"]:
            view["merged_into"] = doc["_id"]  # an old id of a merged contact: the survivor answers
        return view

    async def timeline(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        contact = await self._visible(ctx, args["contact_id"])
        limit = clamp_limit(args.get("limit"))
        flt: dict[str, Any] = {"tenant_id": tenant_of(ctx), "contact_id": contact["_id"]}
        order = [("occurred_at", DESCENDING), ("_id", DESCENDING)]
        after = decode_cursor(args.get("cursor"))
        docs: list[dict[str, Any]] = []
        if after:
            try:
                at = as_utc(datetime.fromisoformat(str(after[0])))
                last_id = str(after[1])
            except (ValueError, IndexError) as exc:
                raise ValidationFailed({"cursor": "is not a cursor this API issued"}) from exc
            ties = await self.db.timeline.find({**flt, "occurred_at": at}).sort(order).to_list(length=None)
            docs = [d for d in ties if d["_id"] < last_id][: limit + 1]
            flt["occurred_at"] = {"$lt": at}
        if len(docs) <= limit:
            want = limit + 1 - len(docs)
            docs += await self.db.timeline.find(flt).sort(order).limit(want).to_list(length=want)
        return page([timeline_view(d) for d in docs], limit, lambda it: [it["occurred_at"], it["id"]])

    async def duplicates(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Contacts that may be the same person: a shared phone or email, the same name, or recorded
        as a possible duplicate when a capture matched several. Each with its ``reasons``."""
        contact = await self._visible(ctx, args["contact_id"])
        rf = read_filter(ctx)
        reasons: dict[str, set[str]] = {}
        found: dict[str, dict[str, Any]] = {}

        async def add(flt: dict[str, Any], reason: str) -> None:
            docs = (
                await self.db.contacts.find({"tenant_id": rf["tenant_id"], **flt})
                .limit(200)
                .to_list(length=200)
            )
            for doc in docs:
                if doc["_id"] == contact["_id"] or doc.get("state") != "active" or not _allowed(rf, doc):
                    continue
                found[doc["_id"]] = doc
                reasons.setdefault(doc["_id"], set()).add(reason)

        if contact.get("phones"):
            await add({"phones": {"$in": contact["phones"]}}, "phone")
        if contact.get("emails"):
            await add({"emails": {"$in": contact["emails"]}}, "email")
        key = contact.get("name_key") or name_key(contact.get("name"))
        if key:
            await add({"name_key": key}, "name")
        recorded = await self.db.possible_duplicates.find(
            {"tenant_id": contact["tenant_id"], "ids": contact["_id"]}
        ).to_list(length=50)
        others = {i for r in recorded for i in r["ids"] if i != contact["_id"] and i not in found}
        if others:
            await add({"_id": {"$in": sorted(others)}}, "captured")
        items = [
            {**contact_view(d), "reasons": sorted(reasons[d["_id"]])}
            for d in sorted(found.values(), key=lambda d: d["_id"], reverse=True)
        ]
        return {"items": items, "next_cursor": None}

    # ---- contact commands -------------------------------------------------------------------

    async def create_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        wf = write_filter(ctx)
        tenant = wf["tenant_id"]
        body = args.get("body") or {}
        phones, emails, errors = normalize_identities(
            body.get("phones", []), body.get("emails", []), _region(ctx)
        )
        name = clean_text(body.get("name"), 300) or None
        if not (name or phones or emails):
            errors["name"] = "a name, a phone or an email is required"
        owner = self._owner_for(ctx, body.get("owner_id"), errors)
        custom, custom_errors = validate_custom(
            await self._fields(tenant, "contact"), body.get("custom") or {}, region=_region(ctx)
        )
        errors.update(custom_errors)
        await self._check_company(tenant, body.get("company_id"), errors)
        if errors:
            raise ValidationFailed(errors)
        tags = sorted({clean_text(t, 100) or "" for t in body.get("tags", [])} - {""})

        async def unit(uow: UnitOfWork) -> dict[str, Any]:
            doc = await create_contact_doc(
                uow,
                tenant,
                name=name,
                phones=phones,
                emails=emails,
                owner_id=owner,
                source={"channel_id": None, "kind": "manual"},
                claim_identities=False,
                extra={"tags": tags, "custom": custom, "company_id": body.get("company_id")},
            )
            uow.emit(
                "contact.created",
                tenant,
                {"contact_id": doc["_id"], "owner_id": owner, "source": doc["source"]},
            )
            return doc

        return contact_view(await self.store.atomic(unit))

    async def update_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        changes = args.get("changes") or {}
        doc = await self._writable(ctx, args["contact_id"])
        tenant = doc["tenant_id"]
        update: dict[str, Any] = {}
        errors: dict[str, str] = {}
        if "phones" in changes or "emails" in changes:
            phones, emails, errors = normalize_identities(
                changes.get("phones", doc["phones"]) or [],
                changes.get("emails", doc["emails"]) or [],
                _region(ctx),
            )
            update.update(phones=phones, emails=emails)
        if "name" in changes:
            update["name"] = clean_text(changes["name"], 300) or None
            update["name_key"] = name_key(update["name"])
        if "owner_id" in changes:
            owner = changes["owner_id"]
            if ctx.get("role") != "admin" and owner not in (ctx.get("user_id"), None):
                errors["owner_id"] = "a manager may only assign records to itself"
            update["owner_id"] = owner
        if "tags" in changes:
            update["tags"] = sorted({clean_text(t, 100) or "" for t in changes["tags"] or []} - {""})
        if "company_id" in changes:
            await self._check_company(tenant, changes["company_id"], errors)
            update["company_id"] = changes["company_id"]
        if "custom" in changes:
            custom, custom_errors = validate_custom(
                await self._fields(tenant, "contact"),
                changes["custom"],
                existing=doc.get("custom") or {},
                partial=True,
                region=_region(ctx),
            )
            errors.update(custom_errors)
            update["custom"] = custom
        merged = {**doc, **update}
        if not (merged.get("name") or merged.get("phones") or merged.get("emails")):
            errors["name"] = "a contact keeps a name, a phone or an email"
        if errors:
            raise ValidationFailed(errors)
        update["search"] = search_words(merged.get("name"), merged["phones"], merged["emails"])

        async def unit(uow: UnitOfWork) -> None:
            update["updated_at"] = uow.now
            await uow.db.contacts.update_one(
                {"_id": doc["_id"], "tenant_id": tenant}, {"$set": update}, session=uow.session
            )
            if "phones" in update:  # claims on identities the contact no longer has are released
                keep = [f"{tenant}:p:{p}" for p in merged["phones"]] + [
                    f"{tenant}:e:{e}" for e in merged["emails"]
                ]
                await uow.db.identities.delete_many(
                    {"contact_id": doc["_id"], "_id": {"$nin": keep}}, session=uow.session
                )
            uow.emit(
                "contact.updated",
                tenant,
                {"contact_id": doc["_id"], "owner_id": merged.get("owner_id"), "fields": sorted(changes)},
            )

        await self.store.atomic(unit)
        return contact_view({**doc, **update})

    async def delete_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> None:
        doc = await self._writable(ctx, args["contact_id"])

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.contacts.update_one(
                {"_id": doc["_id"], "tenant_id": doc["tenant_id"]},
                {"$set": {"state": "deleted", "updated_at": uow.now}},
                session=uow.session,
            )
            await uow.db.identities.delete_many({"contact_id": doc["_id"]}, session=uow.session)
            uow.emit(
                "contact.deleted",
                doc["tenant_id"],
                {"contact_id": doc["_id"], "owner_id": doc.get("owner_id")},
            )

        await self.store.atomic(unit)

    async def add_interaction(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """A note, call, meeting or email logged by hand on the contact's timeline."""
        contact = await self._writable(ctx, args["contact_id"])
        body = args.get("body") or {}
        errors: dict[str, str] = {}
        kind = body.get("kind")
        if kind not in MANUAL_KINDS:
            errors["kind"] = f"must be one of {', '.join(MANUAL_KINDS)}"
        direction = body.get("direction") or ("in" if kind == "email" else "out")
        if direction not in ("in", "out"):
            errors["direction"] = "must be in or out"
        summary = clean_text(body.get("summary"), 10_000)
        if not summary:
            errors["summary"] = "is required"
        data = body.get("data") or {}
        if not isinstance(data, dict):
            errors["data"] = "must be an object"
        if errors:
            raise ValidationFailed(errors)
        tenant = contact["tenant_id"]

        async def unit(uow: UnitOfWork) -> dict[str, Any]:
            occurred = (
                as_utc(datetime.fromisoformat(body["occurred_at"])) if body.get("occurred_at") else uow.now
            )
            item_id = new_id()
            item = {
                "_id": item_id,
                "tenant_id": tenant,
                "contact_id": contact["_id"],
                "kind": kind,
                "direction": direction,
                "occurred_at": occurred,
                "channel_id": None,
                "summary": summary,
                "data": data,
                "subject_key": f"manual:{item_id}",
                "event_keys": [],
                "logged_by": ctx.get("user_id"),
                "created_at": uow.now,
                "updated_at": uow.now,
            }
            await uow.db.timeline.insert_one(item, session=uow.session)
            uow.emit(
                "interaction.recorded",
                tenant,
                {
                    "interaction_id": item_id,
                    "contact_id": contact["_id"],
                    "owner_id": contact.get("owner_id"),
                    "channel_kind": "manual",
                    "kind": kind,
                    "direction": direction,
                    "occurred_at": occurred,
                    "data": {k: v for k, v in data.items() if k in ("status", "duration_s")},
                    "is_new_contact": False,
                    "first_of_subject": True,
                },
            )
            return item

        return timeline_view(await self.store.atomic(unit))

    # ---- merge ------------------------------------------------------------------------------

    async def merge_contacts(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """``contact_id`` survives with both histories; ``other_id`` becomes a pointer to it."""
        survivor = await self._writable(ctx, args["contact_id"])
        other_id = args.get("other_id")
        if not other_id:
            raise ValidationFailed({"other_id": "is required"})
        other = await self._writable(ctx, other_id)
        if other["_id"] == survivor["_id"]:
            raise ValidationFailed({"other_id": "is this contact (or was merged into it)"})
        tenant = survivor["tenant_id"]
        s_id, o_id = survivor["_id"], other["_id"]
        phones = list(dict.fromkeys([*survivor.get("phones", []), *other.get("phones", [])]))
        emails = list(dict.fromkeys([*survivor.get("emails", []), *other.get("emails", [])]))
        name = survivor.get("name") or other.get("name")
        update = {
            "name": name,
            "name_key": name_key(name),
            "phones": phones,
            "emails": emails,
            "raw_phones": list(
                dict.fromkeys([*survivor.get("raw_phones", []), *other.get("raw_phones", [])])
            ),
            "handles": list(dict.fromkeys([*survivor.get("handles", []), *other.get("handles", [])])),
            "tags": sorted({*survivor.get("tags", []), *other.get("tags", [])}),
            "custom": {**(other.get("custom") or {}), **(survivor.get("custom") or {})},
            "company_id": survivor.get("company_id") or other.get("company_id"),
            "owner_id": survivor.get("owner_id") or other.get("owner_id"),
            "search": search_words(name, phones, emails),
            "last_activity_at": max(
                as_utc(survivor.get("last_activity_at") or survivor["created_at"]),
                as_utc(other.get("last_activity_at") or other["created_at"]),
            ),
            "merged_ids": sorted({*survivor.get("merged_ids", []), o_id, *other.get("merged_ids", [])}),
        }
        if as_utc(other["created_at"]) < as_utc(survivor["created_at"]) and other.get("source"):
            update["source"] = other["source"]  # first touch is the earlier one

        async def unit(uow: UnitOfWork) -> None:
            s = uow.session
            update["updated_at"] = uow.now
            await uow.db.contacts.update_one({"_id": s_id, "tenant_id": tenant}, {"$set": update}, session=s)
            await uow.db.contacts.update_one(
                {"_id": o_id, "tenant_id": tenant},
                {
                    "$set": {
                        "state": "merged",
                        "merged_into": s_id,
                        "merged_at": uow.now,
                        "updated_at": uow.now,
                        **PERSON_CLEARED,
                    }
                },
                session=s,
            )
            await uow.db.contacts.update_many(
                {"tenant_id": tenant, "merged_into": o_id}, {"$set": {"merged_into": s_id}}, session=s
            )
            await uow.db.timeline.update_many(
                {"tenant_id": tenant, "contact_id": o_id}, {"$set": {"contact_id": s_id}}, session=s
            )
            await uow.db.inbox.update_many(
                {"tenant_id": tenant, "contact_id": o_id}, {"$set": {"contact_id": s_id}}, session=s
            )
            await uow.db.identities.update_many(
                {"contact_id": o_id}, {"$set": {"contact_id": s_id}}, session=s
            )
            await uow.db.possible_duplicates.delete_many({"tenant_id": tenant, "ids": o_id}, session=s)
            uow.emit(
                "contact.merged",
                tenant,
                {"contact_id": s_id, "merged_id": o_id},
                idempotency_key=f"merge:{o_id}",
            )

        await self.store.atomic(unit)
        return contact_view({**survivor, **update})

    # ---- GDPR -------------------------------------------------------------------------------

    async def export_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Everything this service holds about the person: the card, its merged ids, the whole
        timeline and the inbox items of that sender."""
        contact = await self._visible(ctx, args["contact_id"])
        tenant = contact["tenant_id"]
        items = await (
            self.db.timeline.find({"tenant_id": tenant, "contact_id": contact["_id"]})
            .sort([("occurred_at", DESCENDING), ("_id", DESCENDING)])
            .limit(EXPORT_TIMELINE_MAX)
            .to_list(length=EXPORT_TIMELINE_MAX)
        )
        ors = [{"contact_id": contact["_id"]}, *_sender_filter(contact["phones"], contact["emails"])]
        inbox = await self.db.inbox.find({"tenant_id": tenant, "$or": ors}).to_list(length=1000)
        company = (
            await self.db.companies.find_one({"tenant_id": tenant, "_id": contact["company_id"]})
            if contact.get("company_id")
            else None
        )
        return {
            "contact": {
                **contact_view(contact),
                "raw_phones": contact.get("raw_phones", []),
                "merged_ids": contact.get("merged_ids", []),
                "last_activity_at": contact.get("last_activity_at"),
            },
            "company": company_view(company) if company else None,
            "timeline": [timeline_view(d) for d in items],
            "inbox": [inbox_view(d) for d in inbox],
        }

    async def erase_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Remove the person's data: the card keeps only ids, source and dates; timeline items keep
        kind, direction, time and channel (so counts stay right) without summary or data; inbox
        items of the same sender lose the sender and the content. Emits ``contact.erased``."""
        require_admin(ctx)
        tenant = tenant_of(ctx)
        contact = must(
            await self.db.contacts.find_one({"tenant_id": tenant, "_id": args["contact_id"]}), "contact"
        )
        if contact.get("state") == "merged" and contact.get("merged_into"):
            contact = await self._visible(ctx, contact["merged_into"])
        if contact.get("state") == "erased":
            raise Gone("This contact was erased.")
        c_id = contact["_id"]
        ids = [c_id, *contact.get("merged_ids", [])]
        ors = [
            {"contact_id": {"$in": ids}},
            *_sender_filter(contact.get("phones", []), contact.get("emails", [])),
        ]
        held = await self.db.contacts.find(
            {"tenant_id": tenant, "_id": {"$in": ids}}, {"phones": 1, "emails": 1, "handles": 1}
        ).to_list(None)
        identity_keys = sorted(
            {
                identity_digest(tenant, v, self.rt.secrets.derive(IDENTITY_KEY_PURPOSE))
                for d in held
                for f in ("phones", "emails", "handles")
                for v in d.get(f) or []
            }
        )

        async def unit(uow: UnitOfWork) -> None:
            s = uow.session
            await uow.db.contacts.update_many(
                {"tenant_id": tenant, "_id": {"$in": ids}},
                {"$set": {**PERSON_CLEARED, "updated_at": uow.now, "erased_at": uow.now}},
                session=s,
            )
            await uow.db.contacts.update_one(
                {"tenant_id": tenant, "_id": c_id}, {"$set": {"state": "erased"}}, session=s
            )
            await uow.db.timeline.update_many(
                {"tenant_id": tenant, "contact_id": c_id},
                {"$set": {"summary": "", "data": {}, "erased": True, "updated_at": uow.now}},
                session=s,
            )
            await uow.db.inbox.update_many(
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
                session=s,
            )
            await uow.db.identities.delete_many({"contact_id": {"$in": ids}}, session=s)
            await uow.db.possible_duplicates.delete_many({"tenant_id": tenant, "ids": c_id}, session=s)
            uow.emit(
                "contact.erased",
                tenant,
                {"contact_id": c_id, "identity_keys": identity_keys},
                idempotency_key=f"erase:{c_id}",
            )
            for merged in contact.get("merged_ids", []):
                uow.emit("contact.erased", tenant, {"contact_id": merged}, idempotency_key=f"erase:{merged}")

        await self.store.atomic(unit)
        log.info("contact erased", extra={"contact_id": c_id})
        return {"contact_id": c_id, "erased": True}

    # ---- CSV import -------------------------------------------------------------------------

    async def import_contacts(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """One batch of CSV records: ``{"header": <header record>, "records": [[line, text]]}``.
        Each row is deduplicated against existing contacts by phone and email (and against the
        rows before it); rows that fail are reported by line with the reason."""
        wf = write_filter(ctx)
        tenant = wf["tenant_id"]
        region = _region(ctx)
        columns = csvio.parse_header(args.get("header") or "")
        problem = csvio.header_problem(columns)
        if problem:
            raise ValidationFailed({"header": problem})
        fields = await self._fields(tenant, "contact")
        rows: list[csvio.Row] = []
        failed: list[dict[str, Any]] = []
        for line, text in args.get("records") or []:
            try:
                row = csvio.parse_row(columns, int(line), str(text), region)
            except csvio.RowError as exc:
                failed.append({"line": int(line), "reason": exc.reason})
                continue
            if row is None:
                continue
            errors: dict[str, str] = {}
            row.owner_id = self._owner_for(ctx, row.owner_id, errors)
            custom, custom_errors = validate_custom(fields, row.custom, region=region, partial=True)
            errors.update(custom_errors)
            if row.company_id:
                await self._check_company(tenant, row.company_id, errors)
            if errors:
                failed.append({"line": row.line, "reason": "; ".join(f"{k}: {v}" for k, v in errors.items())})
                continue
            row.custom = custom
            rows.append(row)
        counts = {"imported": 0, "updated": 0}

        async def unit(uow: UnitOfWork) -> list[dict[str, Any]]:
            counts.update(imported=0, updated=0)
            row_failures: list[dict[str, Any]] = []
            for row in rows:
                candidates = await find_candidates(uow, tenant, row.phones, row.emails)
                if candidates:
                    target = candidates[0]
                    if "owner_id" in wf and target.get("owner_id") not in wf["owner_id"]["$in"]:
                        row_failures.append(
                            {"line": row.line, "reason": "matches a contact owned by another user"}
                        )
                        continue
                    await self._import_update(uow, target, row)
                    counts["updated"] += 1
                    continue
                doc = await create_contact_doc(
                    uow,
                    tenant,
                    name=row.name,
                    phones=row.phones,
                    emails=row.emails,
                    owner_id=row.owner_id,
                    source={"channel_id": None, "kind": "import"},
                    claim_identities=False,
                    extra={
                        "tags": sorted(set(row.tags) - {""}),
                        "custom": row.custom,
                        "company_id": row.company_id,
                    },
                )
                uow.emit(
                    "contact.created",
                    tenant,
                    {"contact_id": doc["_id"], "owner_id": row.owner_id, "source": doc["source"]},
                )
                counts["imported"] += 1
            return row_failures

        failed += await self.store.atomic(unit)
        failed.sort(key=lambda f: f["line"])
        return {**counts, "failed": failed}

    async def _import_update(self, uow: UnitOfWork, target: dict[str, Any], row: csvio.Row) -> None:
        phones = list(dict.fromkeys([*target.get("phones", []), *row.phones]))
        emails = list(dict.fromkeys([*target.get("emails", []), *row.emails]))
        name = target.get("name") or row.name
        update = {
            "name": name,
            "name_key": name_key(name),
            "phones": phones,
            "emails": emails,
            "tags": sorted({*target.get("tags", []), *row.tags} - {""}),
            "custom": {**row.custom, **(target.get("custom") or {})},
            "owner_id": target.get("owner_id") or row.owner_id,
            "company_id": target.get("company_id") or row.company_id,
            "search": search_words(name, phones, emails),
            "updated_at": uow.now,
        }
        await uow.db.contacts.update_one({"_id": target["_id"]}, {"$set": update}, session=uow.session)
        target.update(update)
        uow.emit(
            "contact.updated",
            target["tenant_id"],
            {"contact_id": target["_id"], "owner_id": target.get("owner_id"), "fields": ["import"]},
        )

    # ---- companies --------------------------------------------------------------------------

    def _company_fields(
        self, ctx: dict[str, Any], body: dict[str, Any], errors: dict[str, str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "name" in body:
            out["name"] = clean_text(body.get("name"), 300) or None
            if not out["name"]:
                errors["name"] = "is required"
        if "domain" in body:
            out["domain"] = (clean_text(body.get("domain"), 253) or "").lower() or None
        if "phones" in body or "emails" in body:
            phones, emails, errs = normalize_identities(
                body.get("phones") or [], body.get("emails") or [], _region(ctx)
            )
            errors.update(errs)
            if "phones" in body:
                out["phones"] = phones
            if "emails" in body:
                out["emails"] = emails
        if "tags" in body:
            out["tags"] = sorted({clean_text(t, 100) or "" for t in body.get("tags") or []} - {""})
        if "owner_id" in body:
            out["owner_id"] = body.get("owner_id")
            if ctx.get("role") != "admin" and out["owner_id"] not in (ctx.get("user_id"), None):
                errors["owner_id"] = "a manager may only assign records to itself"
        return out

    async def create_company(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        wf = write_filter(ctx)
        body = args.get("body") or {}
        errors: dict[str, str] = {}
        fields = self._company_fields(ctx, {"name": body.get("name"), **body}, errors)
        custom, custom_errors = validate_custom(
            await self._fields(wf["tenant_id"], "company"), body.get("custom") or {}, region=_region(ctx)
        )
        errors.update(custom_errors)
        if errors:
            raise ValidationFailed(errors)
        doc = {
            "_id": new_id(),
            "tenant_id": wf["tenant_id"],
            "name": fields["name"],
            "domain": fields.get("domain"),
            "phones": fields.get("phones", []),
            "emails": fields.get("emails", []),
            "tags": fields.get("tags", []),
            "custom": custom,
            "owner_id": fields.get("owner_id", None if ctx.get("role") == "admin" else ctx.get("user_id")),
        }
        doc["search"] = search_words(doc["name"], doc["phones"], doc["emails"])

        async def unit(uow: UnitOfWork) -> dict[str, Any]:
            doc.update(created_at=uow.now, updated_at=uow.now)
            await uow.db.companies.insert_one(doc, session=uow.session)
            uow.emit(
                "company.created", doc["tenant_id"], {"company_id": doc["_id"], "owner_id": doc["owner_id"]}
            )
            return doc

        return company_view(await self.store.atomic(unit))

    async def list_companies(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        limit = clamp_limit(args.get("limit"))
        flt: dict[str, Any] = read_filter(ctx)
        q = (args.get("q") or "").strip().lower().replace("ё", "е")
        if q:
            flt["search"] = {"$regex": "^" + re.escape(q)}
        after = decode_cursor(args.get("cursor"))
        if after:
            flt["_id"] = {"$lt": after[0]}
        docs = (
            await self.db.companies.find(flt)
            .sort("_id", DESCENDING)
            .limit(limit + 1)
            .to_list(length=limit + 1)
        )
        return page([company_view(d) for d in docs], limit, lambda it: [it["id"]])

    async def get_company(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return company_view(
            must(await self.db.companies.find_one({**read_filter(ctx), "_id": args["company_id"]}), "company")
        )

    async def update_company(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        wf = write_filter(ctx)
        doc = must(await self.db.companies.find_one({**wf, "_id": args["company_id"]}), "company")
        errors: dict[str, str] = {}
        changes = args.get("changes") or {}
        update = self._company_fields(ctx, changes, errors)
        if changes.get("custom") is not None:
            update["custom"], custom_errors = validate_custom(
                await self._fields(wf["tenant_id"], "company"),
                changes["custom"],
                existing=doc.get("custom") or {},
                partial=True,
                region=_region(ctx),
            )
            errors.update(custom_errors)
        if errors:
            raise ValidationFailed(errors)
        merged = {**doc, **update}
        update["search"] = search_words(merged["name"], merged.get("phones", []), merged.get("emails", []))

        async def unit(uow: UnitOfWork) -> None:
            update["updated_at"] = uow.now
            await uow.db.companies.update_one({"_id": doc["_id"]}, {"$set": update}, session=uow.session)
            uow.emit(
                "company.updated", doc["tenant_id"], {"company_id": doc["_id"], "fields": sorted(update)}
            )

        await self.store.atomic(unit)
        return company_view({**doc, **update})

    # ---- custom fields ----------------------------------------------------------------------

    async def create_custom_field(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        definition, errors = check_definition(args.get("body") or {})
        if errors:
            raise ValidationFailed(errors)
        doc = {"_id": new_id(), "tenant_id": tenant_of(ctx), **definition, "created_at": self.clock.now()}
        try:
            await self.db.custom_fields.insert_one(doc)
        except DuplicateKeyError as exc:
            raise Conflict(
                f"A {definition['entity']} field with the key {definition['key']!r} exists.",
                errors={"key": "is taken"},
            ) from exc
        return definition_view(doc)

    async def list_custom_fields(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        flt: dict[str, Any] = {"tenant_id": tenant_of(ctx)}
        if args.get("entity"):
            flt["entity"] = args["entity"]
        docs = await self.db.custom_fields.find(flt).sort([("entity", 1), ("key", 1)]).to_list(length=1000)
        return {"items": [definition_view(d) for d in docs], "next_cursor": None}

    async def validate_custom(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """For other services (deals): ``{"entity", "custom", "existing"?, "partial"?}`` →
        ``{"custom": canonical values}``, or 422 naming each ``custom.<key>``."""
        entity = args.get("entity") or "contact"
        custom, errors = validate_custom(
            await self._fields(tenant_of(ctx), entity),
            args.get("custom") or {},
            existing=args.get("existing") or {},
            partial=bool(args.get("partial")),
            region=_region(ctx),
        )
        if errors:
            raise ValidationFailed(errors)
        return {"custom": custom}

    # ---- inbox ------------------------------------------------------------------------------

    def _inbox_read(self, ctx: dict[str, Any]) -> dict[str, Any]:
        return read_filter(ctx, owner_field="channel_owner_id")

    async def list_inbox(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        limit = clamp_limit(args.get("limit"))
        flt = self._inbox_read(ctx)
        status = args.get("status")
        if status:
            if status not in INBOX_STATUSES:
                raise ValidationFailed({"status": f"must be one of {', '.join(INBOX_STATUSES)}"})
            flt["status"] = status
        after = decode_cursor(args.get("cursor"))
        if after:
            flt["_id"] = {"$lt": after[0]}
        docs = (
            await self.db.inbox.find(flt).sort("_id", DESCENDING).limit(limit + 1).to_list(length=limit + 1)
        )
        return page([inbox_view(d) for d in docs], limit, lambda it: [it["id"]])

    async def get_inbox_item(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return inbox_view(
            must(
                await self.db.inbox.find_one({**self._inbox_read(ctx), "_id": args["item_id"]}), "inbox item"
            )
        )

    async def _pending_item(self, ctx: dict[str, Any], item_id: str) -> dict[str, Any]:
        flt = {**read_filter(ctx, owner_field="channel_owner_id"), "_id": item_id}
        write_filter(ctx)  # 403 for viewers before the lookup
        item = must(await self.db.inbox.find_one(flt), "inbox item")
        if item["status"] != "pending":
            raise Conflict(f"This inbox item is already {item['status']}.")
        return item

    async def _attach_items(
        self,
        uow: UnitOfWork,
        items: list[dict[str, Any]],
        contact: dict[str, Any],
        status: str,
        *,
        new: bool,
        by: str | None,
    ) -> None:
        """Put each item's interaction on the contact's timeline and close the item."""
        tenant = contact["tenant_id"]
        for n, item in enumerate(items):
            inter = item["interaction"]
            existing = await uow.db.timeline.find_one(
                {"tenant_id": tenant, "subject_key": inter["subject_key"]}, session=uow.session
            )
            if existing is None:
                doc = {
                    "_id": new_id(),
                    "tenant_id": tenant,
                    "contact_id": contact["_id"],
                    "kind": inter["kind"],
                    "direction": inter["direction"],
                    "occurred_at": inter["occurred_at"],
                    "channel_id": inter.get("channel_id"),
                    "summary": inter.get("summary"),
                    "data": inter.get("data") or {},
                    "subject_key": inter["subject_key"],
                    "event_keys": inter.get("event_keys", []),
                    "created_at": uow.now,
                    "updated_at": uow.now,
                }
                await uow.db.timeline.insert_one(doc, session=uow.session)
                item_id = doc["_id"]
            else:
                item_id = existing["_id"]
            await uow.db.inbox.update_one(
                {"_id": item["_id"], "status": "pending"},
                {
                    "$set": {
                        "status": status if n == 0 else "linked",
                        "contact_id": contact["_id"],
                        "interaction_id": item_id,
                        "resolved_at": uow.now,
                        "resolved_by": by,
                    }
                },
                session=uow.session,
            )
            uow.emit(
                "interaction.recorded",
                tenant,
                {
                    "interaction_id": item_id,
                    "contact_id": contact["_id"],
                    "owner_id": contact.get("owner_id"),
                    "channel_id": item.get("channel_id"),
                    "channel_kind": item.get("channel_kind"),
                    "channel_owner_id": item.get("channel_owner_id"),
                    "kind": inter["kind"],
                    "direction": inter["direction"],
                    "occurred_at": inter["occurred_at"],
                    "data": inter.get("data") or {},
                    "is_new_contact": new and n == 0,
                    "first_of_subject": existing is None,
                },
                idempotency_key=f"inbox-recorded:{item['_id']}",
            )
        last = max(as_utc(i["interaction"]["occurred_at"]) for i in items)
        await uow.db.contacts.update_one(
            {"_id": contact["_id"]},
            {"$max": {"last_activity_at": last}},
            session=uow.session,
        )

    async def _same_sender(
        self, uow: UnitOfWork, item: dict[str, Any], contact: dict[str, Any]
    ) -> list[dict[str, Any]]:
        ors = _sender_filter(contact.get("phones", []), contact.get("emails", []))
        if not ors:
            return []
        others = await uow.db.inbox.find(
            {"tenant_id": item["tenant_id"], "status": "pending", "_id": {"$ne": item["_id"]}, "$or": ors},
            session=uow.session,
        ).to_list(length=500)
        return others

    async def accept_inbox_item(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Create the contact from the sender (or use the one that matches by now), put the
        interaction on its timeline, link the sender's other pending items, and announce
        ``inbox.item_accepted`` so that deals opens a deal when a pipeline applies."""
        item = await self._pending_item(ctx, args["item_id"])
        errors: dict[str, str] = {}
        owner = args.get("owner_id") or item.get("channel_owner_id")
        owner = self._owner_for(ctx, owner, errors)
        if errors:
            raise ValidationFailed(errors)
        tenant = item["tenant_id"]
        sender = item.get("sender") or {}
        phones, emails = list(sender.get("phones", [])), list(sender.get("emails", []))
        pipeline_id = args.get("pipeline_id")

        async def unit(uow: UnitOfWork) -> dict[str, Any]:
            fresh = await uow.db.inbox.find_one(
                {"_id": item["_id"], "status": "pending"}, session=uow.session
            )
            if fresh is None:
                raise Conflict("This inbox item was resolved meanwhile.")
            candidates = await find_candidates(uow, tenant, phones, emails)
            new = not candidates
            if candidates:
                contact = candidates[0]
            else:
                contact = await create_contact_doc(
                    uow,
                    tenant,
                    name=sender.get("name"),
                    phones=phones,
                    emails=emails,
                    owner_id=owner,
                    source=source_of(item.get("channel_id"), item.get("channel_kind"), item.get("utm")),
                    extra={
                        "raw_phones": list(sender.get("raw_phones", [])),
                        "handles": list(sender.get("handles", [])),
                    },
                )
                uow.emit(
                    "contact.created",
                    tenant,
                    {
                        "contact_id": contact["_id"],
                        "owner_id": owner,
                        "source": contact["source"],
                        "channel_owner_id": item.get("channel_owner_id"),
                        "interaction_kind": item["interaction"]["kind"],
                    },
                    idempotency_key=f"contact:{contact['_id']}",
                )
            others = await self._same_sender(uow, fresh, contact)
            await self._attach_items(
                uow, [fresh, *others], contact, "accepted", new=new, by=ctx.get("user_id")
            )
            title = contact.get("name") or (phones[:1] or emails[:1] or ["New lead"])[0]
            uow.emit(
                "inbox.item_accepted",
                tenant,
                {
                    "item_id": fresh["_id"],
                    "contact_id": contact["_id"],
                    "pipeline_id": pipeline_id,
                    "owner_id": contact.get("owner_id") or owner,
                    "title": title,
                },
                idempotency_key=f"accept:{fresh['_id']}",
            )
            return contact

        for attempt in range(3):
            try:
                contact = await self.store.atomic(unit)
                break
            except IdentityRace:
                if attempt == 2:
                    raise
        return await self.get_inbox_item(ctx, {"item_id": item["_id"]}) | {"contact": contact_view(contact)}

    async def link_inbox_item(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Attach the item (and the sender's other pending items) to an existing contact, which
        learns the sender's phones and emails so the next touch resolves by itself."""
        item = await self._pending_item(ctx, args["item_id"])
        if not args.get("contact_id"):
            raise ValidationFailed({"contact_id": "is required"})
        try:
            contact = await self._writable(ctx, args["contact_id"])
        except NotFound as exc:
            raise ValidationFailed({"contact_id": "is not a contact you may change"}) from exc
        sender = item.get("sender") or {}
        tenant = item["tenant_id"]

        async def unit(uow: UnitOfWork) -> None:
            fresh = await uow.db.inbox.find_one(
                {"_id": item["_id"], "status": "pending"}, session=uow.session
            )
            if fresh is None:
                raise Conflict("This inbox item was resolved meanwhile.")
            phones = list(dict.fromkeys([*contact.get("phones", []), *sender.get("phones", [])]))
            emails = list(dict.fromkeys([*contact.get("emails", []), *sender.get("emails", [])]))
            handles = list(dict.fromkeys([*contact.get("handles", []), *sender.get("handles", [])]))
            name = contact.get("name") or sender.get("name")
            await uow.db.contacts.update_one(
                {"_id": contact["_id"]},
                {
                    "$set": {
                        "phones": phones,
                        "emails": emails,
                        "handles": handles,
                        "name": name,
                        "name_key": name_key(name),
                        "search": search_words(name, phones, emails),
                        "updated_at": uow.now,
                    }
                },
                session=uow.session,
            )
            contact.update(phones=phones, emails=emails, name=name)
            others = await self._same_sender(uow, fresh, contact)
            await self._attach_items(
                uow, [fresh, *others], contact, "linked", new=False, by=ctx.get("user_id")
            )
            uow.emit(
                "inbox.item_linked",
                tenant,
                {"item_id": fresh["_id"], "contact_id": contact["_id"]},
                idempotency_key=f"link:{fresh['_id']}",
            )

        await self.store.atomic(unit)
        return await self.get_inbox_item(ctx, {"item_id": item["_id"]})

    async def reject_inbox_item(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Spam: the item is kept for audit and never reaches a card."""
        item = await self._pending_item(ctx, args["item_id"])

        async def unit(uow: UnitOfWork) -> None:
            res = await uow.db.inbox.update_one(
                {"_id": item["_id"], "status": "pending"},
                {"$set": {"status": "rejected", "resolved_at": uow.now, "resolved_by": ctx.get("user_id")}},
                session=uow.session,
            )
            if res.modified_count != 1:
                raise Conflict("This inbox item was resolved meanwhile.")
            uow.emit(
                "inbox.item_rejected",
                item["tenant_id"],
                {
                    "item_id": item["_id"],
                    "channel_id": item.get("channel_id"),
                    "kind": item["interaction"]["kind"],
                },
                idempotency_key=f"reject:{item['_id']}",
            )

        await self.store.atomic(unit)
        return await self.get_inbox_item(ctx, {"item_id": item["_id"]})
