"""Automation rules' commands to the contacts service."""

from __future__ import annotations

from services.contacts.store import ContactsStore, ContactsTx
from shared.events import ContactUpdated, Envelope, RuleAssignOwnerRequested

CONSUMER_ASSIGN_OWNER = "contacts.rule_assign_owner"


async def on_assign_owner(store: ContactsStore, env: Envelope, cmd: RuleAssignOwnerRequested) -> None:
    """A rule gives a contact to a user (a deal's owner is the deals service's)."""
    if not cmd.contact_id or cmd.deal_id:
        return
    contact_id = cmd.contact_id

    async def unit(tx: ContactsTx) -> None:
        contact = await tx.resolve(env.tenant_id, contact_id)
        if contact is None or contact.get("owner_id") == cmd.user_id:
            return
        await tx.set_contact(env.tenant_id, contact["_id"], {"owner_id": cmd.user_id, "updated_at": tx.now})
        tx.emit(
            "contact.updated",
            env.tenant_id,
            ContactUpdated.model_validate(
                {
                    "contact_id": contact["_id"],
                    "owner_id": cmd.user_id,
                    "fields": ["owner_id"],
                    # loop protection: the rule engine sees which rule caused this change
                    "caused_by_rule": cmd.caused_by_rule,
                    "rule_chain": cmd.rule_chain,
                    "caused_by_subject": cmd.caused_by_subject,
                }
            ),
            caused_by=env,
            idempotency_key=cmd.action_key,
        )

    await store.consume(env, CONSUMER_ASSIGN_OWNER, unit)
