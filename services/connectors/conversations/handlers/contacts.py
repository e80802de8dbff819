"""What happens to a card reaches its conversations: ``contact.merged`` moves them to the
surviving contact; ``contact.erased`` removes them with their messages and pending sends
(personal data everywhere)."""

from __future__ import annotations

from typing import Any

from services.connectors.conversations import store
from shared.events import Envelope
from shared.mongo import UnitOfWork

CONSUMER = "conversations.contacts"


async def on_merged(host: Any, env: Envelope) -> None:
    survivor, merged = env.payload.get("contact_id"), env.payload.get("merged_id")
    if not survivor or not merged:
        return

    async def unit(uow: UnitOfWork) -> None:
        await store.move_contact(uow, env.tenant_id, str(merged), str(survivor))

    await host.store.consume(env, CONSUMER, unit)


async def forget(host: Any, env: Envelope) -> None:
    contact_id = env.payload.get("contact_id")
    if not contact_id:
        return

    async def unit(uow: UnitOfWork) -> None:
        await store.forget_contact(uow, env.tenant_id, str(contact_id))

    await host.store.atomic(unit)
