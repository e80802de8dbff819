"""A contact's timeline: read it, log a touch by hand, and show other services' deal and task
events on it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.common.access import tenant_of
from services.contacts import api
from services.contacts.domain.activity import activity_item
from services.contacts.domain.timeline import RECORDED_DATA_KEYS, TimelineItem
from services.contacts.domain.views import timeline_view
from services.contacts.handlers.access import visible, writable
from services.contacts.store import ContactsStore, ContactsTx
from shared.clock import as_utc
from shared.errors import ValidationFailed
from shared.events import Envelope, InteractionRecorded
from shared.normalize import clean_text
from shared.pagination import clamp_limit, decode_cursor, page

CONSUMER_ACTIVITY = "contacts.activity"
Ctx = dict[str, Any]


async def timeline(store: ContactsStore, ctx: Ctx, req: api.GetTimeline) -> dict[str, Any]:
    contact = await visible(store, ctx, req.contact_id)
    limit = clamp_limit(req.limit)
    raw = decode_cursor(req.cursor)
    after: tuple[datetime, str] | None = None
    if raw:
        try:
            after = (as_utc(datetime.fromisoformat(str(raw[0]))), str(raw[1]))
        except (ValueError, IndexError) as exc:
            raise ValidationFailed({"cursor": "is not a cursor this API issued"}) from exc
    docs = await store.timeline_page(tenant_of(ctx), contact["_id"], limit, after)
    return page([timeline_view(d) for d in docs], limit, lambda it: [it.occurred_at, it.id])


async def add_interaction(store: ContactsStore, ctx: Ctx, req: api.AddInteraction) -> api.TimelineItemOut:
    """A note, call, meeting or email logged by hand on the contact's timeline."""
    contact = await writable(store, ctx, req.contact_id)
    body = req.body
    direction = body.direction or ("in" if body.kind == "email" else "out")
    summary = clean_text(body.summary, 10_000)
    if not summary:
        raise ValidationFailed({"summary": "is required"})
    tenant = contact["tenant_id"]

    async def unit(tx: ContactsTx) -> dict[str, Any]:
        item = TimelineItem.new(
            tenant_id=tenant,
            contact_id=contact["_id"],
            kind=body.kind,
            direction=direction,
            occurred_at=as_utc(body.occurred_at) if body.occurred_at else tx.now,
            now=tx.now,
            summary=summary,
            data=body.data,
            logged_by=ctx.get("user_id"),
        )
        await tx.insert_timeline(item.doc())
        tx.emit(
            "interaction.recorded",
            tenant,
            InteractionRecorded(
                interaction_id=item.id,
                contact_id=contact["_id"],
                owner_id=contact.get("owner_id"),
                channel_kind="manual",
                kind=item.kind,  # type: ignore[arg-type]
                direction=item.direction,  # type: ignore[arg-type]
                occurred_at=item.occurred_at,
                data={k: v for k, v in item.data.items() if k in RECORDED_DATA_KEYS},
                is_new_contact=False,
                first_of_subject=True,
            ),
        )
        return item.doc()

    return timeline_view(await store.atomic(unit))


async def on_activity(store: ContactsStore, env: Envelope) -> None:
    """A deal or task event naming a contact becomes an item on that contact's timeline."""
    item = activity_item(env.event_type, env.payload, env.occurred_at)
    if item is None:
        return

    async def unit(tx: ContactsTx) -> None:
        contact = await tx.resolve(env.tenant_id, str(env.payload["contact_id"]))
        if contact is None:
            return  # unknown, deleted or erased: nothing to show it on
        doc = TimelineItem.new(
            tenant_id=env.tenant_id,
            contact_id=contact["_id"],
            now=tx.now,
            subject_key=f"event:{env.event_id}",
            event_keys=[env.event_id],
            **item,
        ).doc()
        await tx.insert_timeline(doc)  # False: already shown (the same event, redelivered)

    await store.consume(env, CONSUMER_ACTIVITY, unit)
