"""The contacts service, as a table: its indexes, the events it handles, the requests it answers.

Customer cards, identity resolution, the inbox, timelines, merges, GDPR and CSV import. The rules
live in ``domain/`` (pure), the behaviours in ``handlers/`` (one file each, given the store), every
database call in ``store.py``, the RPC contract the gateway uses in ``api.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ClassVar, TypeVar

from pymongo import ASCENDING, DESCENDING, IndexModel

from services.contacts import api
from services.contacts.domain.activity import DEAL_EVENTS, TASK_EVENTS
from services.contacts.handlers import (
    capture,
    companies,
    contacts,
    custom_fields,
    gdpr,
    imports,
    inbox,
    merge,
    rules,
    timeline,
)
from services.contacts.store import ContactsStore
from shared.events import InteractionCaptured, RuleAssignOwnerRequested
from shared.mongo import Indexes
from shared.normalize import IDENTITY_KEY_PURPOSE
from shared.service import Service

T = TypeVar("T")

INDEXES: Indexes = {
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
"""Every read of the service filters on the fields of one of these (see store.py)."""
Handler = Callable[..., Awaitable[Any]]

EVENTS: dict[Any, Callable[..., Awaitable[None]]] = {
    InteractionCaptured: capture.on_captured,
    RuleAssignOwnerRequested: rules.on_assign_owner,
    **{event_type: timeline.on_activity for event_type in (*DEAL_EVENTS, *TASK_EVENTS)},
}
"""Payload schema (or event type, for the deal and task events shown on timelines) → handler."""

RPC: dict[type[api.Request], Handler] = {
    api.ListContacts: contacts.list_contacts,
    api.GetContact: contacts.get_contact,
    api.CreateContact: contacts.create_contact,
    api.UpdateContact: contacts.update_contact,
    api.DeleteContact: contacts.delete_contact,
    api.GetTimeline: timeline.timeline,
    api.AddInteraction: timeline.add_interaction,
    api.FindDuplicates: merge.duplicates,
    api.MergeContacts: merge.merge_contacts,
    api.ExportContact: gdpr.export_contact,
    api.EraseContact: gdpr.erase_contact,
    api.ImportContacts: imports.import_contacts,
    api.CreateCompany: companies.create_company,
    api.ListCompanies: companies.list_companies,
    api.GetCompany: companies.get_company,
    api.UpdateCompany: companies.update_company,
    api.CreateCustomField: custom_fields.create_custom_field,
    api.ListCustomFields: custom_fields.list_custom_fields,
    api.ValidateCustom: custom_fields.validate_custom_values,
    api.ListInbox: inbox.list_inbox,
    api.GetInboxItem: inbox.get_inbox_item,
    api.AcceptInboxItem: inbox.accept_inbox_item,
    api.LinkInboxItem: inbox.link_inbox_item,
    api.RejectInboxItem: inbox.reject_inbox_item,
}
"""Request type → handler ``(store, ctx, request)``."""


class ContactsService(Service):
    name = "contacts"
    indexes: ClassVar = INDEXES

    @property
    def contacts(self) -> ContactsStore:
        """The service's store, as the handlers use it."""
        return ContactsStore(self.store)

    def setup(self) -> None:
        for event, handler in EVENTS.items():
            self.on(event, self._given_store(handler))
        key = self.rt.secrets.derive(IDENTITY_KEY_PURPOSE)
        for request, method in RPC.items():
            if method is gdpr.erase_contact:
                method = partial(gdpr.erase_contact, identity_key=key)
            self.serve(request, self._given_store(method))

    def _given_store(self, handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def run(*args: Any) -> T:
            return await handler(self.contacts, *args)

        return run
