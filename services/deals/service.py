"""The deals service: pipelines, loss reasons, deals, moves and their stage history.

The table: the events the service handles and the RPC methods it answers. The rules live in
:mod:`services.deals.domain` (pure); the handlers in ``handlers/`` (pipelines, deals, other
services' events) load state through ``store.py``, apply a domain command, and write the new state
together with the command's events (outbox) in one transaction.

Collections (database ``<ns>_deals``):

- ``pipelines``: :meth:`Pipeline.to_doc`; ``loss_reasons``: one document per tenant ``{reasons}``.
- ``deals``: :meth:`Deal.to_doc` plus ``rev`` (optimistic concurrency), ``inbox_item_id`` and
  ``external_id`` (imports) where they apply.
- ``keys``: one document per idempotency key (``<tenant>|inbox|<item id>``,
  ``<tenant>|import|<external id>``), written in the transaction that creates the deal.
- ``open_tasks``: the tasks service's tasks that name a deal (from ``task.*`` events), so each
  deal's ``next_action`` (its earliest open task) can be recomputed without asking tasks.
- ``contact_sources``: each contact's first-touch attribution (from ``contact.created``), copied
  to the contact's new deals.
"""

from __future__ import annotations

from typing import ClassVar

from services.deals import api
from services.deals.handlers.base import BATCH, TASK_EVENTS, _micros
from services.deals.handlers.deals import DealHandlers
from services.deals.handlers.events import EventHandlers
from services.deals.handlers.pipelines import PipelineHandlers
from services.deals.store import INDEXES
from shared.events import (
    ContactCreated,
    ContactErased,
    ContactMerged,
    InboxItemAccepted,
    RuleAssignOwnerRequested,
    RuleMoveDealRequested,
)
from shared.service import as_arguments, envelope_only

__all__ = ["BATCH", "DealsService", "_micros"]

REQUESTS: tuple[type[api.Request], ...] = (
    api.ListPipelines,
    api.GetPipeline,
    api.CreatePipeline,
    api.UpdatePipeline,
    api.DeleteStage,
    api.DeletePipeline,
    api.ListLossReasons,
    api.AddLossReason,
    api.ListDeals,
    api.GetDeal,
    api.CreateDeal,
    api.UpdateDeal,
    api.MoveDeal,
    api.ImportDeals,
    api.AcceptInboxItem,
    api.ExportContact,
)
"""The RPC table: each request of the contract, answered by the handler method of its name."""


class DealsService(PipelineHandlers, DealHandlers, EventHandlers):
    name = "deals"
    indexes: ClassVar = INDEXES

    def setup(self) -> None:
        # by payload schema: each payload is validated before its handler runs
        self.on(InboxItemAccepted, envelope_only(self.on_item_accepted))
        self.on(ContactCreated, envelope_only(self.on_contact_created))
        self.on(ContactMerged, envelope_only(self.on_contact_merged))
        self.on(ContactErased, envelope_only(self.on_contact_erased))
        self.on(RuleMoveDealRequested, envelope_only(self.on_rule_move_deal))
        self.on(RuleAssignOwnerRequested, envelope_only(self.on_rule_assign_owner))
        for event_type in TASK_EVENTS:
            self.on(event_type, self.on_task_event)
        for request in REQUESTS:
            self.serve(request, as_arguments(getattr(self, request.METHOD)))
