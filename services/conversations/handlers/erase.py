"""``contact.erased``: the person's conversations and messages go (personal data everywhere)."""

from __future__ import annotations

from typing import Any

from services.conversations import store
from shared.events import Envelope
from shared.mongo import UnitOfWork


async def forget(host: Any, env: Envelope) -> None:
    contact_id = env.payload.get("contact_id")
    if not contact_id:
        return

    async def unit(uow: UnitOfWork) -> None:
        await store.forget_contact(uow, env.tenant_id, str(contact_id))

    await host.store.atomic(unit)
