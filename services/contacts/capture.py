"""From a captured touch to the customer card: resolve identity, then timeline, inbox or new contact.

Runs once per event (the processed marker is written in the same transaction as the effect), and
is idempotent on the business fact too: the provider's event key is kept on the timeline item, so
the same call or lead captured twice leaves one item. Events about one real-world thing (a call's
start, end and recording) share a ``subject_key`` and are merged into one item in any order.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from services.contacts.model import name_key, search_words, source_of
from shared.clock import as_utc, new_id
from shared.events import (
    ContactCreated,
    Envelope,
    InboxItemOpened,
    InteractionCaptured,
    InteractionRecorded,
)
from shared.mongo import UnitOfWork

FINAL_CALL = ("answered", "missed", "busy", "failed")
CANDIDATE_SCAN = 50
# Every read of the capture path filters on exactly the fields of an index (a prefix of it) and
# checks anything else (state, owner) in Python: planners then have one choice, the index (the
# local MongoDB-protocol server scans the collection when a filter has fields beyond an index's).


def merge_data(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a later-or-earlier event of the same subject into the item's data.

    A final call status never goes back to a non-final one. A different final status replaces the
    old one with its own duration: connectors publish each call event with the verdict of every leg
    seen so far (a caller leg ``completed`` becomes ``missed`` once the dialled leg said no-answer),
    so the newer verdict knows more."""
    out = dict(old)
    if new.get("status") in FINAL_CALL and old.get("status") in FINAL_CALL and new["status"] != old["status"]:
        out.pop("duration_s", None)
    for key, value in new.items():
        if value is None:
            continue
        if key == "status" and out.get("status") in FINAL_CALL and value not in FINAL_CALL:
            continue  # a late "ringing" never undoes a final status
        if key == "duration_s" and isinstance(out.get(key), int | float):
            out[key] = max(out[key], value)
            continue
        out[key] = value
    return out


async def find_candidates(
    uow: UnitOfWork, tenant_id: str, phones: list[str], emails: list[str], handles: list[str] | None = None
) -> list[dict[str, Any]]:
    """Contacts sharing a phone, an email or a messenger handle, most recently active first
    (index-backed lookups)."""
    ors: list[dict[str, Any]] = []
    if phones:
        ors.append({"phones": {"$in": phones}})
    if emails:
        ors.append({"emails": {"$in": emails}})
    if handles:
        ors.append({"handles": {"$in": handles}})
    found: dict[str, dict[str, Any]] = {}
    for clause in ors:  # one indexed query per identity kind: (tenant_id, phones) / (tenant_id, emails)
        cursor = uow.db.contacts.find({"tenant_id": tenant_id, **clause}, session=uow.session).limit(
            CANDIDATE_SCAN
        )
        for doc in await cursor.to_list(length=CANDIDATE_SCAN):
            if doc.get("state") == "active":
                found[doc["_id"]] = doc
    return sorted(
        found.values(), key=lambda d: as_utc(d.get("last_activity_at") or d["created_at"]), reverse=True
    )


async def learn_identities(
    uow: UnitOfWork, contact: dict[str, Any], phones: list[str], emails: list[str], handles: list[str]
) -> None:
    """The only contact that matched a touch learns the touch's other phones, emails and handles
    (a Telegram user who shares a phone, a known caller who leaves an email in a form). Only when
    exactly one contact matched: no other active contact holds any of them, so nothing is taken
    from another card."""
    new = {
        "phones": [p for p in phones if p not in contact.get("phones", [])],
        "emails": [e for e in emails if e not in contact.get("emails", [])],
        "handles": [h for h in handles if h not in contact.get("handles", [])],
    }
    if not any(new.values()):
        return
    merged = {k: [*contact.get(k, []), *v] for k, v in new.items()}
    await uow.db.contacts.update_one(
        {"_id": contact["_id"], "tenant_id": contact["tenant_id"]},
        {"$set": {**merged, "search": search_words(contact.get("name"), merged["phones"], merged["emails"])}},
        session=uow.session,
    )
    contact.update(merged)


async def upsert_timeline_item(
    uow: UnitOfWork, tenant_id: str, contact_id: str, ic: InteractionCaptured, key: str
) -> tuple[dict[str, Any], bool, bool]:
    """Append or merge; returns (item, changed, first_of_subject)."""
    subject = ic.subject_key or key
    existing = await uow.db.timeline.find_one(
        {"tenant_id": tenant_id, "subject_key": subject}, session=uow.session
    )
    if existing is not None:
        if key in existing.get("event_keys", []):
            return existing, False, False
        occurred = min(as_utc(existing["occurred_at"]), ic.occurred_at)
        data = merge_data(existing.get("data", {}), ic.data)
        final_now = data.get("status") in FINAL_CALL and data.get("status") != existing.get("data", {}).get(
            "status"
        )
        summary = ic.summary if final_now or not existing.get("summary") else existing["summary"]
        update = {
            "$set": {"occurred_at": occurred, "data": data, "summary": summary, "updated_at": uow.now},
            "$addToSet": {"event_keys": key},
        }
        await uow.db.timeline.update_one({"_id": existing["_id"]}, update, session=uow.session)
        existing.update(occurred_at=occurred, data=data, summary=summary)
        return existing, True, False
    item = {
        "_id": new_id(),
        "tenant_id": tenant_id,
        "contact_id": contact_id,
        "kind": ic.kind,
        "direction": ic.direction,
        "occurred_at": ic.occurred_at,
        "channel_id": ic.channel_id,
        "summary": ic.summary,
        "data": ic.data,
        "subject_key": subject,
        "event_keys": [key],
        "created_at": uow.now,
        "updated_at": uow.now,
    }
    await uow.db.timeline.insert_one(item, session=uow.session)
    return item, True, True


async def capture(uow: UnitOfWork, env: Envelope) -> None:
    ic: InteractionCaptured = env.parsed()
    tenant = env.tenant_id
    key = env.idempotency_key or env.event_id
    phones, emails, handles = list(ic.sender.phones), list(ic.sender.emails), list(ic.sender.handles)
    if ic.contact_id:  # an answer sent from this card's conversation
        card = await uow.db.contacts.find_one(
            {"_id": ic.contact_id, "tenant_id": tenant}, session=uow.session
        )
        if card is not None and card.get("state") == "active":
            await _record(uow, env, ic, key, card, new_contact=False)
            return
    candidates = await find_candidates(uow, tenant, phones, emails, handles)

    if candidates:
        contact = candidates[0]
        if len(candidates) == 1:
            await learn_identities(uow, contact, phones, emails, handles)
        if len(candidates) > 1:
            ids = sorted(c["_id"] for c in candidates[:5])
            await uow.db.possible_duplicates.update_one(
                {"_id": f"{tenant}:{'|'.join(ids)}"},
                {
                    "$setOnInsert": {
                        "tenant_id": tenant,
                        "ids": ids,
                        "created_at": uow.now,
                        "reason": "shared identity",
                    }
                },
                upsert=True,
                session=uow.session,
            )
        await _record(uow, env, ic, key, contact, new_contact=False)
        return

    if ic.subject_key:  # a later event of a call already on a card (its sender may be unknown)
        known = await uow.db.timeline.find_one(
            {"tenant_id": tenant, "subject_key": ic.subject_key}, {"contact_id": 1}, session=uow.session
        )
        if known is not None:
            owner = await uow.db.contacts.find_one(
                {"_id": known["contact_id"], "tenant_id": tenant}, session=uow.session
            )
            if owner is not None and owner.get("state") == "active":
                await _record(uow, env, ic, key, owner, new_contact=False)
                return

    if ic.intake == "inbox":
        await _open_inbox_item(uow, env, ic, key)
        return

    contact = await create_contact_doc(
        uow,
        tenant,
        name=ic.sender.name,
        phones=phones,
        emails=emails,
        owner_id=ic.channel_owner_id,
        source=source_of(ic.channel_id, ic.channel_kind, ic.utm),
        extra={"raw_phones": list(ic.sender.raw_phones), "handles": handles},
    )
    uow.emit(
        "contact.created",
        tenant,
        ContactCreated(
            contact_id=contact["_id"],
            owner_id=contact.get("owner_id"),
            source=contact["source"],
            channel_owner_id=ic.channel_owner_id,
            interaction_kind=ic.kind,
        ),
        caused_by=env,
        idempotency_key=f"contact:{contact['_id']}",
    )
    await _record(uow, env, ic, key, contact, new_contact=True)


async def create_contact_doc(
    uow: UnitOfWork,
    tenant: str,
    *,
    name: str | None,
    phones: list[str],
    emails: list[str],
    owner_id: str | None,
    source: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
    claim_identities: bool = True,
) -> dict[str, Any]:
    """Insert a contact. Auto-created contacts claim their phones/emails in ``identities`` (unique
    ids), so two replicas capturing the same new person at once cannot both create it: the loser's
    transaction fails and its retry finds the winner's contact."""
    now = uow.now
    contact = {
        "_id": new_id(),
        "tenant_id": tenant,
        "name": name,
        "phones": phones,
        "emails": emails,
        "company_id": None,
        "owner_id": owner_id,
        "tags": [],
        "custom": {},
        "source": source,
        "state": "active",
        "search": search_words(name, phones, emails),
        "name_key": name_key(name),
        "created_at": now,
        "updated_at": now,
        "last_activity_at": now,
        **(extra or {}),
    }
    handles = list(contact.get("handles") or [])
    if claim_identities and (phones or emails or handles):
        await claim_identities_for(uow, tenant, contact["_id"], phones, emails, handles)
    await uow.db.contacts.insert_one(contact, session=uow.session)
    return contact


async def claim_identities_for(
    uow: UnitOfWork,
    tenant: str,
    contact_id: str,
    phones: list[str],
    emails: list[str],
    handles: list[str] | None = None,
) -> None:
    """Claim phones/emails for ``contact_id``. A claim whose contact no longer holds that identity
    (edited, merged away, erased) is taken over; a live claim means another capture won the race."""
    wanted = {f"{tenant}:p:{p}": ("phones", p) for p in phones}
    wanted.update({f"{tenant}:e:{e}": ("emails", e) for e in emails})
    wanted.update({f"{tenant}:h:{h}": ("handles", h) for h in handles or ()})
    claims = await uow.db.identities.find({"_id": {"$in": list(wanted)}}, session=uow.session).to_list(
        length=len(wanted)
    )
    for claim in claims:
        field, value = wanted[claim["_id"]]
        if claim["contact_id"] == contact_id:
            continue
        holder = await uow.db.contacts.find_one(
            {"_id": claim["contact_id"], "tenant_id": tenant}, {"state": 1, field: 1}, session=uow.session
        )
        if holder is not None and holder.get("state") == "active" and value in holder.get(field, []):
            raise IdentityRace()
        await uow.db.identities.update_one(
            {"_id": claim["_id"]}, {"$set": {"contact_id": contact_id}}, session=uow.session
        )
    fresh = [i for i in wanted if i not in {c["_id"] for c in claims}]
    if fresh:
        try:
            await uow.db.identities.insert_many(
                [{"_id": i, "contact_id": contact_id} for i in fresh], session=uow.session
            )
        except DuplicateKeyError as exc:
            raise IdentityRace() from exc


class IdentityRace(Exception):
    """Another capture created this person first; retrying finds it."""


async def _record(
    uow: UnitOfWork,
    env: Envelope,
    ic: InteractionCaptured,
    key: str,
    contact: dict[str, Any],
    *,
    new_contact: bool,
) -> None:
    item, changed, first = await upsert_timeline_item(uow, env.tenant_id, contact["_id"], ic, key)
    if not changed:
        return
    last = max(as_utc(contact.get("last_activity_at") or contact["created_at"]), ic.occurred_at)
    await uow.db.contacts.update_one(
        {"_id": contact["_id"], "tenant_id": env.tenant_id},
        {"$set": {"last_activity_at": last}},
        session=uow.session,
    )
    uow.emit(
        "interaction.recorded",
        env.tenant_id,
        InteractionRecorded(
            interaction_id=item["_id"],
            contact_id=contact["_id"],
            owner_id=contact.get("owner_id"),
            channel_id=ic.channel_id,
            channel_kind=ic.channel_kind,
            channel_owner_id=ic.channel_owner_id,
            kind=ic.kind,
            direction=ic.direction,
            occurred_at=as_utc(item["occurred_at"]),
            data=item["data"],
            is_new_contact=new_contact,
            first_of_subject=first,
        ),
        caused_by=env,
        idempotency_key=f"recorded:{key}",
    )


async def _open_inbox_item(uow: UnitOfWork, env: Envelope, ic: InteractionCaptured, key: str) -> None:
    subject = ic.subject_key or key
    existing = await uow.db.inbox.find_one(
        {"tenant_id": env.tenant_id, "interaction.subject_key": subject}, session=uow.session
    )
    if existing is not None:
        inter = existing["interaction"]
        if key in inter.get("event_keys", []):
            return
        was_missed = _missed(inter)
        inter["data"] = merge_data(inter.get("data", {}), ic.data)
        inter["occurred_at"] = min(as_utc(inter["occurred_at"]), ic.occurred_at)
        inter["event_keys"] = [*inter.get("event_keys", []), key]
        await uow.db.inbox.update_one(
            {"_id": existing["_id"]}, {"$set": {"interaction": inter}}, session=uow.session
        )
        if not was_missed and _missed(inter):
            _emit_call_missed(uow, env, existing["_id"], ic, inter)
        return
    item_id = new_id()
    await uow.db.inbox.insert_one(
        {
            "_id": item_id,
            "tenant_id": env.tenant_id,
            "status": "pending",
            "channel_id": ic.channel_id,
            "channel_kind": ic.channel_kind,
            "channel_owner_id": ic.channel_owner_id,
            "received_at": uow.now,
            "sender": ic.sender.model_dump(),
            "utm": ic.utm,
            "interaction": {
                "kind": ic.kind,
                "direction": ic.direction,
                "occurred_at": ic.occurred_at,
                "channel_id": ic.channel_id,
                "summary": ic.summary,
                "data": ic.data,
                "subject_key": subject,
                "event_keys": [key],
            },
            "contact_id": None,
        },
        session=uow.session,
    )
    uow.emit(
        "inbox.item_opened",
        env.tenant_id,
        InboxItemOpened(item_id=item_id, channel_id=ic.channel_id, kind=ic.kind),
        caused_by=env,
        idempotency_key=f"inbox:{key}",
    )
    inter = {"kind": ic.kind, "direction": ic.direction, "data": ic.data, "occurred_at": ic.occurred_at}
    if _missed(inter):
        _emit_call_missed(uow, env, item_id, ic, inter)


def _missed(interaction: dict[str, Any]) -> bool:
    return (
        interaction.get("kind") == "call"
        and interaction.get("direction") == "in"
        and (interaction.get("data") or {}).get("status") == "missed"
    )


def _emit_call_missed(
    uow: UnitOfWork, env: Envelope, item_id: str, ic: InteractionCaptured, inter: dict[str, Any]
) -> None:
    """A missed inbound call from an unknown number waits in the inbox: somebody must still call
    back (the tasks service's built-in rule makes the task). Once per inbox item."""
    uow.emit(
        "inbox.call_missed",
        env.tenant_id,
        {
            "item_id": item_id,
            "channel_id": ic.channel_id,
            "channel_kind": ic.channel_kind,
            "channel_owner_id": ic.channel_owner_id,
            "kind": "call",
            "direction": "in",
            "occurred_at": as_utc(inter["occurred_at"]).isoformat(),
            "data": {"status": "missed"},
        },
        caused_by=env,
        idempotency_key=f"inbox-missed:{item_id}",
    )
