"""In-memory fakes of the contacts store (``services/contacts/store.py``), for unit tests of the
handlers without a server. They subclass the real classes and keep documents in dicts; a unit of
work runs on a copy of the collections that replaces them only when the unit returns (a unit that
raises leaves nothing behind), and a consumer's processed markers live in the same copy."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from services.contacts.domain.cards import IdentityRace
from services.contacts.store import ContactsStore, ContactsTx, identity_ids
from shared.clock import as_utc
from shared.events import Envelope, make_event

T = TypeVar("T")
Doc = dict[str, Any]
COLLECTIONS = ("contacts", "timeline", "inbox", "identities", "possible_duplicates", "companies", "processed")


class FakeTx(ContactsTx):
    def __init__(self, data: dict[str, dict[str, Doc]], now: datetime) -> None:
        self.data = data
        self._now = now
        self.emitted: list[Envelope] = []

    @property
    def now(self) -> datetime:
        return self._now

    def emit(
        self,
        event_type: str,
        tenant_id: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        caused_by: Envelope | None = None,
    ) -> None:
        self.emitted.append(
            make_event(
                event_type,
                tenant_id=tenant_id,
                producer="contacts",
                payload=payload,
                idempotency_key=idempotency_key,
                caused_by=caused_by,
                occurred_at=self._now,
            )
        )

    def _where(self, coll: str, **match: Any) -> list[Doc]:
        return [d for d in self.data[coll].values() if all(d.get(k) == v for k, v in match.items())]

    async def contact(self, tenant: str, contact_id: str) -> Doc | None:
        doc = self.data["contacts"].get(contact_id)
        return copy.deepcopy(doc) if doc is not None and doc["tenant_id"] == tenant else None

    async def find_candidates(
        self, tenant: str, phones: list[str], emails: list[str], handles: list[str] | None = None
    ) -> list[Doc]:
        found = [
            copy.deepcopy(d)
            for d in self._where("contacts", tenant_id=tenant, state="active")
            if set(phones) & set(d.get("phones", []))
            or set(emails) & set(d.get("emails", []))
            or set(handles or []) & set(d.get("handles", []))
        ]
        return sorted(found, key=lambda d: as_utc(d.get("last_activity_at") or d["created_at"]), reverse=True)

    async def insert_contact(self, doc: Doc) -> None:
        assert doc["_id"] not in self.data["contacts"]
        self.data["contacts"][doc["_id"]] = copy.deepcopy(doc)

    async def set_contact(self, tenant: str, contact_id: str, fields: Doc) -> None:
        doc = self.data["contacts"].get(contact_id)
        if doc is not None and doc["tenant_id"] == tenant:
            doc.update(copy.deepcopy(fields))

    async def touch_contact(self, tenant: str, contact_id: str, at: datetime) -> None:
        doc = self.data["contacts"][contact_id]
        doc["last_activity_at"] = max(as_utc(doc.get("last_activity_at") or at), as_utc(at))

    async def claim_identities(
        self,
        tenant: str,
        contact_id: str,
        phones: list[str],
        emails: list[str],
        handles: list[str] | None = None,
    ) -> None:
        for claim_id in identity_ids(tenant, phones, emails, handles or ()):
            holder = self.data["identities"].get(claim_id)
            if holder is not None and holder["contact_id"] != contact_id:
                raise IdentityRace()
            self.data["identities"][claim_id] = {"_id": claim_id, "contact_id": contact_id}

    async def note_possible_duplicate(self, tenant: str, ids: list[str]) -> None:
        key = f"{tenant}:{'|'.join(ids)}"
        self.data["possible_duplicates"].setdefault(key, {"_id": key, "tenant_id": tenant, "ids": ids})

    async def timeline_item(self, tenant: str, subject_key: str) -> Doc | None:
        found = self._where("timeline", tenant_id=tenant, subject_key=subject_key)
        return copy.deepcopy(found[0]) if found else None

    async def insert_timeline(self, doc: Doc) -> bool:
        if self._where("timeline", tenant_id=doc["tenant_id"], subject_key=doc["subject_key"]):
            return False
        self.data["timeline"][doc["_id"]] = copy.deepcopy(doc)
        return True

    async def fold_timeline(self, item_id: str, fields: Doc, event_key: str) -> None:
        doc = self.data["timeline"][item_id]
        doc.update(copy.deepcopy(fields), updated_at=self._now)
        if event_key not in doc["event_keys"]:
            doc["event_keys"].append(event_key)

    async def inbox_item(self, tenant: str, subject_key: str) -> Doc | None:
        found = [
            d
            for d in self._where("inbox", tenant_id=tenant)
            if d["interaction"]["subject_key"] == subject_key
        ]
        return copy.deepcopy(found[0]) if found else None

    async def insert_inbox(self, doc: Doc) -> None:
        self.data["inbox"][doc["_id"]] = copy.deepcopy(doc)

    async def set_inbox_interaction(self, item_id: str, interaction: Doc) -> None:
        self.data["inbox"][item_id]["interaction"] = copy.deepcopy(interaction)

    async def pending_item(self, item_id: str) -> Doc | None:
        doc = self.data["inbox"].get(item_id)
        return copy.deepcopy(doc) if doc is not None and doc["status"] == "pending" else None

    async def resolve_pending(self, item_id: str, fields: Doc) -> bool:
        doc = self.data["inbox"].get(item_id)
        if doc is None or doc["status"] != "pending":
            return False
        doc.update(copy.deepcopy(fields))
        return True

    async def pending_from(self, tenant: str, phones: list[str], emails: list[str], but: str) -> list[Doc]:
        return [
            copy.deepcopy(d)
            for d in self._where("inbox", tenant_id=tenant, status="pending")
            if d["_id"] != but
            and (
                set(phones) & set(d["sender"].get("phones", []))
                or set(emails) & set(d["sender"].get("emails", []))
            )
        ]


class FakeStore(ContactsStore):
    def __init__(self, now: datetime) -> None:
        self.data: dict[str, dict[str, Doc]] = {c: {} for c in COLLECTIONS}
        self.clock_now = now
        self.published: list[Envelope] = []

    def now(self) -> datetime:
        return self.clock_now

    async def atomic(
        self,
        fn: Callable[[ContactsTx], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        attempts: int = 5,
    ) -> T:
        for attempt in range(1, attempts + 1):
            tx = FakeTx(copy.deepcopy(self.data), self.clock_now)
            try:
                result = await fn(tx)
            except retry_on:
                if attempt >= attempts:
                    raise
                continue
            self.data = tx.data  # commit
            self.published += tx.emitted
            return result
        raise AssertionError("unreachable")

    async def consume(
        self,
        env: Envelope,
        consumer: str,
        fn: Callable[[ContactsTx], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        attempts: int = 5,
    ) -> T | None:
        marker = f"{consumer}:{env.event_id}"
        if marker in self.data["processed"]:
            return None

        async def unit(tx: ContactsTx) -> T:
            assert isinstance(tx, FakeTx)
            tx.data["processed"][marker] = {"_id": marker}
            return await fn(tx)

        return await self.atomic(unit, retry_on=retry_on, attempts=attempts)

    async def inbox_one(self, flt: Doc, item_id: str) -> Doc | None:
        doc = self.data["inbox"].get(item_id)
        if doc is None or doc["tenant_id"] != flt["tenant_id"]:
            return None
        rule = flt.get("channel_owner_id")
        return copy.deepcopy(doc) if rule is None or doc.get("channel_owner_id") in rule["$in"] else None

    def docs(self, coll: str) -> list[Doc]:
        return list(self.data[coll].values())

    def events(self, event_type: str) -> list[Envelope]:
        return [e for e in self.published if e.event_type == event_type]
