"""The contacts service: customer cards, identity resolution, inbox and timelines."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pymongo import ASCENDING, DESCENDING, IndexModel

from services.common.access import must, read_filter, tenant_of, write_filter
from services.contacts.capture import IdentityRace, capture, create_contact_doc
from services.contacts.model import contact_view, normalize_identities, search_words, timeline_view
from shared.clock import as_utc
from shared.errors import Gone, ValidationFailed
from shared.events import Envelope
from shared.normalize import clean_text, normalize_email, phone_search_key
from shared.pagination import clamp_limit, decode_cursor, page
from shared.service import Service

CONSUMER_CAPTURE = "contacts.capture"


class ContactsService(Service):
    name = "contacts"
    indexes: ClassVar = {
        "contacts": [
            IndexModel([("tenant_id", ASCENDING), ("phones", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("emails", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("search", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("owner_id", ASCENDING), ("_id", DESCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("_id", DESCENDING)]),
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
            IndexModel([("tenant_id", ASCENDING), ("interaction.subject_key", ASCENDING)]),
        ],
        "identities": [IndexModel([("contact_id", ASCENDING)])],
        "possible_duplicates": [IndexModel([("tenant_id", ASCENDING), ("ids", ASCENDING)])],
    }

    def setup(self) -> None:
        self.on("interaction.captured", self.on_captured)
        for name in (
            "list_contacts",
            "get_contact",
            "create_contact",
            "update_contact",
            "delete_contact",
            "timeline",
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

    # ---- queries ----------------------------------------------------------------------------

    async def _visible(self, ctx: dict[str, Any], contact_id: str) -> dict[str, Any]:
        doc = must(await self.db.contacts.find_one({**read_filter(ctx), "_id": contact_id}), "contact")
        if doc.get("state") == "erased":
            raise Gone("This contact was erased.")
        if doc.get("state") == "merged" and doc.get("merged_into"):
            return await self._visible(ctx, doc["merged_into"])
        if doc.get("state") == "deleted":
            must(None, "contact")
        return doc

    async def list_contacts(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        limit = clamp_limit(args.get("limit"))
        filters = args.get("filters") or {}
        region = (ctx.get("settings") or {}).get("default_region", "RU")
        flt: dict[str, Any] = {**read_filter(ctx), "state": "active"}
        if filters.get("phone"):
            key = phone_search_key(filters["phone"], region)
            flt["phones"] = key if key and key.startswith("+") else "\x00no-match"
        if filters.get("email"):
            flt["emails"] = normalize_email(filters["email"]) or filters["email"].strip().lower()
        if filters.get("q"):
            q = filters["q"].strip().lower().replace("ё", "е")
            digits = re.sub(r"[\s()\-+.]", "", q)
            term = digits if digits.isdigit() else q
            flt["search"] = {"$regex": "^" + re.escape(term)}
        if filters.get("owner_id"):
            flt["owner_id"] = (
                filters["owner_id"]
                if "owner_id" not in flt
                else {"$in": [o for o in flt["owner_id"]["$in"] if o == filters["owner_id"]]}
            )
        after = decode_cursor(args.get("cursor"))
        if after:
            flt["_id"] = {"$lt": after[0]}
        docs = (
            await self.db.contacts.find(flt)
            .sort("_id", DESCENDING)
            .limit(limit + 1)
            .to_list(length=limit + 1)
        )
        return page([contact_view(d) for d in docs], limit, lambda it: [it["id"]])

    async def get_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        return contact_view(await self._visible(ctx, args["contact_id"]))

    async def timeline(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        contact = await self._visible(ctx, args["contact_id"])
        limit = clamp_limit(args.get("limit"))
        flt: dict[str, Any] = {"tenant_id": tenant_of(ctx), "contact_id": contact["_id"]}
        after = decode_cursor(args.get("cursor"))
        if after:
            from datetime import datetime

            at = datetime.fromisoformat(after[0])
            flt["$or"] = [{"occurred_at": {"$lt": at}}, {"occurred_at": at, "_id": {"$lt": after[1]}}]
        docs = await (
            self.db.timeline.find(flt)
            .sort([("occurred_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit + 1)
            .to_list(length=limit + 1)
        )
        return page([timeline_view(d) for d in docs], limit, lambda it: [it["occurred_at"], it["id"]])

    # ---- commands ---------------------------------------------------------------------------

    async def create_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        wf = write_filter(ctx)
        body = args.get("body") or {}
        region = (ctx.get("settings") or {}).get("default_region", "RU")
        phones, emails, errors = normalize_identities(body.get("phones", []), body.get("emails", []), region)
        name = clean_text(body.get("name"), 300)
        if not (name or phones or emails):
            errors["name"] = "a name, a phone or an email is required"
        if errors:
            raise ValidationFailed(errors)
        owner = body.get("owner_id")
        if ctx.get("role") != "admin":
            owner = owner or ctx.get("user_id")
            if owner not in (ctx.get("user_id"), None):
                raise ValidationFailed({"owner_id": "a manager may only create contacts it owns"})
        tenant = wf["tenant_id"]

        async def unit(uow: Any) -> dict[str, Any]:
            doc = await create_contact_doc(
                uow,
                tenant,
                name=name,
                phones=phones,
                emails=emails,
                owner_id=owner,
                source={"channel_id": None, "kind": "manual"},
                claim_identities=False,
                extra={
                    "tags": body.get("tags", []),
                    "custom": body.get("custom", {}),
                    "company_id": body.get("company_id"),
                },
            )
            uow.emit(
                "contact.created",
                tenant,
                {"contact_id": doc["_id"], "owner_id": owner, "source": doc["source"]},
            )
            return doc

        return contact_view(await self.store.atomic(unit))

    async def update_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        wf = write_filter(ctx)
        changes = args.get("changes") or {}
        doc = must(
            await self.db.contacts.find_one({**wf, "_id": args["contact_id"], "state": "active"}), "contact"
        )
        region = (ctx.get("settings") or {}).get("default_region", "RU")
        update: dict[str, Any] = {}
        errors: dict[str, str] = {}
        if "phones" in changes or "emails" in changes:
            phones, emails, errors = normalize_identities(
                changes.get("phones", doc["phones"]) or [], changes.get("emails", doc["emails"]) or [], region
            )
            update.update(phones=phones, emails=emails)
        if "name" in changes:
            update["name"] = clean_text(changes["name"], 300)
        for key in ("company_id", "owner_id", "tags", "custom"):
            if key in changes:
                update[key] = changes[key]
        if errors:
            raise ValidationFailed(errors)
        merged = {**doc, **update}
        update["search"] = search_words(merged.get("name"), merged["phones"], merged["emails"])

        async def unit(uow: Any) -> None:
            update["updated_at"] = uow.now
            await uow.db.contacts.update_one(
                {"_id": doc["_id"], "tenant_id": doc["tenant_id"]}, {"$set": update}, session=uow.session
            )
            uow.emit(
                "contact.updated",
                doc["tenant_id"],
                {"contact_id": doc["_id"], "fields": sorted(k for k in changes)},
            )

        await self.store.atomic(unit)
        return contact_view({**doc, **update})

    async def delete_contact(self, ctx: dict[str, Any], args: dict[str, Any]) -> None:
        wf = write_filter(ctx)
        doc = must(
            await self.db.contacts.find_one({**wf, "_id": args["contact_id"], "state": "active"}), "contact"
        )

        async def unit(uow: Any) -> None:
            await uow.db.contacts.update_one(
                {"_id": doc["_id"], "tenant_id": doc["tenant_id"]},
                {"$set": {"state": "deleted", "updated_at": uow.now}},
                session=uow.session,
            )
            await uow.db.identities.delete_many({"contact_id": doc["_id"]}, session=uow.session)
            uow.emit("contact.deleted", doc["tenant_id"], {"contact_id": doc["_id"]})

        await self.store.atomic(unit)


def last_active(doc: dict[str, Any]) -> Any:
    return as_utc(doc.get("last_activity_at") or doc["created_at"])
