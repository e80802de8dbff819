"""From a captured touch to the customer card: resolve identity, then timeline, inbox or new contact.

Runs once per event (the processed marker is written in the same transaction as the effect), and
is idempotent on the business fact too: the provider's event key is kept on the timeline item, so
the same call or lead captured twice leaves one item. Events about one real-world thing (a call's
start, end and recording) share a ``subject_key`` and are merged into one item in any order.
"""

from __future__ import annotations

from typing import Any

from services.contacts.domain.cards import IdentityRace, new_contact, new_identities, source_of
from services.contacts.domain.timeline import TimelineItem, fold_event, is_missed_call, merge_data
from services.contacts.store import ContactsStore, ContactsTx
from shared.clock import as_utc, new_id
from shared.events import (
    ContactCreated,
    Envelope,
    InboxCallMissed,
    InboxItemOpened,
    InteractionCaptured,
    InteractionRecorded,
)

CONSUMER = "contacts.capture"


async def on_captured(store: ContactsStore, env: Envelope, ic: InteractionCaptured) -> None:
    await store.consume(env, CONSUMER, lambda tx: capture(tx, env, ic), retry_on=(IdentityRace,), attempts=3)


async def capture(tx: ContactsTx, env: Envelope, ic: InteractionCaptured) -> None:
    tenant = env.tenant_id
    key = env.idempotency_key or env.event_id
    phones, emails, handles = list(ic.sender.phones), list(ic.sender.emails), list(ic.sender.handles)
    if ic.contact_id:  # an answer sent from this card's conversation
        card = await tx.contact(tenant, ic.contact_id)
        if card is not None and card.get("state") == "active":
            await _record(tx, env, ic, key, card, new_contact=False)
            return
    candidates = await tx.find_candidates(tenant, phones, emails, handles)

    if candidates:
        contact = candidates[0]
        if len(candidates) == 1:
            # the only contact that matched learns the touch's other identities (no other active
            # contact holds any of them, so nothing is taken from another card)
            learnt = new_identities(contact, phones, emails, handles)
            if learnt is not None:
                await tx.set_contact(tenant, contact["_id"], learnt)
                contact.update(learnt)
        else:
            await tx.note_possible_duplicate(tenant, sorted(c["_id"] for c in candidates[:5]))
        await _record(tx, env, ic, key, contact, new_contact=False)
        return

    if ic.subject_key:  # a later event of a call already on a card (its sender may be unknown)
        known = await tx.timeline_item(tenant, ic.subject_key)
        if known is not None:
            owner = await tx.contact(tenant, known["contact_id"])
            if owner is not None and owner.get("state") == "active":
                await _record(tx, env, ic, key, owner, new_contact=False)
                return

    if ic.intake == "inbox":
        await _open_inbox_item(tx, env, ic, key)
        return

    contact = await create_contact(
        tx,
        tenant,
        new_contact(
            tenant,
            tx.now,
            name=ic.sender.name,
            phones=phones,
            emails=emails,
            owner_id=ic.channel_owner_id,
            source=source_of(ic.channel_id, ic.channel_kind, ic.utm),
            extra={"raw_phones": list(ic.sender.raw_phones), "handles": handles},
        ),
        claim=True,
        channel_owner_id=ic.channel_owner_id,
        interaction_kind=ic.kind,
        caused_by=env,
    )
    await _record(tx, env, ic, key, contact, new_contact=True)


async def create_contact(
    tx: ContactsTx,
    tenant: str,
    doc: dict[str, Any],
    *,
    claim: bool,
    channel_owner_id: str | None = None,
    interaction_kind: str | None = None,
    caused_by: Envelope | None = None,
) -> dict[str, Any]:
    """Insert a new card and announce ``contact.created`` (the one place that does). Cards made
    from a touch ``claim`` their identities first (:meth:`ContactsTx.claim_identities`), so a
    racing capture of the same new person cannot make a second one."""
    if claim and (doc["phones"] or doc["emails"] or doc.get("handles")):
        await tx.claim_identities(
            tenant, doc["_id"], doc["phones"], doc["emails"], list(doc.get("handles") or [])
        )
    await tx.insert_contact(doc)
    tx.emit(
        "contact.created",
        tenant,
        ContactCreated(
            contact_id=doc["_id"],
            owner_id=doc.get("owner_id"),
            source=doc["source"],
            channel_owner_id=channel_owner_id,
            interaction_kind=interaction_kind,
        ),
        caused_by=caused_by,
        idempotency_key=f"contact:{doc['_id']}",
    )
    return doc


async def upsert_timeline_item(
    tx: ContactsTx, tenant_id: str, contact_id: str, ic: InteractionCaptured, key: str
) -> tuple[dict[str, Any], bool, bool]:
    """Append or merge; returns (item, changed, first_of_subject)."""
    subject = ic.subject_key or key
    existing = await tx.timeline_item(tenant_id, subject)
    if existing is not None:
        if key in existing.get("event_keys", []):
            return existing, False, False
        fields = fold_event(existing, occurred_at=ic.occurred_at, data=ic.data, summary=ic.summary)
        await tx.fold_timeline(existing["_id"], fields, key)
        existing.update(fields)
        return existing, True, False
    item = TimelineItem.new(
        tenant_id=tenant_id,
        contact_id=contact_id,
        kind=ic.kind,
        direction=ic.direction,
        occurred_at=ic.occurred_at,
        now=tx.now,
        channel_id=ic.channel_id,
        summary=ic.summary,
        data=ic.data,
        subject_key=subject,
        event_keys=[key],
    ).doc()
    await tx.insert_timeline(item)
    return item, True, True


async def _record(
    tx: ContactsTx,
    env: Envelope,
    ic: InteractionCaptured,
    key: str,
    contact: dict[str, Any],
    *,
    new_contact: bool,
) -> None:
    item, changed, first = await upsert_timeline_item(tx, env.tenant_id, contact["_id"], ic, key)
    if not changed:
        return
    await tx.touch_contact(env.tenant_id, contact["_id"], ic.occurred_at)
    tx.emit(
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


async def _open_inbox_item(tx: ContactsTx, env: Envelope, ic: InteractionCaptured, key: str) -> None:
    subject = ic.subject_key or key
    existing = await tx.inbox_item(env.tenant_id, subject)
    if existing is not None:
        inter = existing["interaction"]
        if key in inter.get("event_keys", []):
            return
        was_missed = is_missed_call(inter)
        inter["data"] = merge_data(inter.get("data", {}), ic.data)
        inter["occurred_at"] = min(as_utc(inter["occurred_at"]), ic.occurred_at)
        inter["event_keys"] = [*inter.get("event_keys", []), key]
        await tx.set_inbox_interaction(existing["_id"], inter)
        if not was_missed and is_missed_call(inter):
            _emit_call_missed(tx, env, existing["_id"], ic, inter)
        return
    item_id = new_id()
    await tx.insert_inbox(
        {
            "_id": item_id,
            "tenant_id": env.tenant_id,
            "status": "pending",
            "channel_id": ic.channel_id,
            "channel_kind": ic.channel_kind,
            "channel_owner_id": ic.channel_owner_id,
            "received_at": tx.now,
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
        }
    )
    tx.emit(
        "inbox.item_opened",
        env.tenant_id,
        InboxItemOpened(item_id=item_id, channel_id=ic.channel_id, kind=ic.kind),
        caused_by=env,
        idempotency_key=f"inbox:{key}",
    )
    inter = {"kind": ic.kind, "direction": ic.direction, "data": ic.data, "occurred_at": ic.occurred_at}
    if is_missed_call(inter):
        _emit_call_missed(tx, env, item_id, ic, inter)


def _emit_call_missed(
    tx: ContactsTx, env: Envelope, item_id: str, ic: InteractionCaptured, inter: dict[str, Any]
) -> None:
    """A missed inbound call from an unknown number waits in the inbox: somebody must still call
    back (the tasks service's built-in rule makes the task). Once per inbox item."""
    tx.emit(
        "inbox.call_missed",
        env.tenant_id,
        InboxCallMissed(
            item_id=item_id,
            channel_id=ic.channel_id,
            channel_kind=ic.channel_kind,
            channel_owner_id=ic.channel_owner_id,
            occurred_at=as_utc(inter["occurred_at"]).isoformat(),
        ),
        caused_by=env,
        idempotency_key=f"inbox-missed:{item_id}",
    )
