"""The analytics service, as a table: read models built from events (``handlers/readmodels.py``);
reports read only them (``handlers/reporting.py``, built by ``reports.py``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pymongo import ASCENDING, IndexModel

from services.analytics import answers, api
from services.analytics.handlers.readmodels import CONSUMER, ReadModelHandlers
from services.analytics.handlers.reporting import ReportHandlers
from shared.events import Envelope
from shared.service import as_arguments


class AnalyticsService(ReadModelHandlers, ReportHandlers):
    name = "analytics"
    indexes: ClassVar = {
        "deals": [
            IndexModel([("tenant_id", ASCENDING), ("pipeline_id", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("owner_id", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("contact_id", ASCENDING)]),
        ],
        "contacts": [IndexModel([("tenant_id", ASCENDING), ("created_at", ASCENDING)])],
        "interactions": [IndexModel([("tenant_id", ASCENDING), ("occurred_at", ASCENDING)])],
        "tasks_done": [IndexModel([("tenant_id", ASCENDING), ("completed_at", ASCENDING)])],
        "pipelines": [IndexModel([("tenant_id", ASCENDING)])],
        "plans": [IndexModel([("tenant_id", ASCENDING), ("period", ASCENDING)])],
        "costs": [IndexModel([("tenant_id", ASCENDING), ("period", ASCENDING)])],
    }

    def setup(self) -> None:
        handlers = {
            "pipeline.created": self._pipeline,
            "pipeline.updated": self._pipeline,
            "pipeline.deleted": self._pipeline,
            "deal.created": self._deal,
            "deal.updated": self._deal,
            "deal.stage_changed": self._deal_moved,
            "deal.won": self._deal,
            "deal.lost": self._deal,
            "deal.reopened": self._deal,
            "contact.created": self._contact,
            "contact.merged": self._contact_merged,
            "interaction.recorded": self._interaction,
            "task.completed": self._task_done,
            "message.sent": answers.record_answer,
        }
        for event_type, fn in handlers.items():
            self.on(event_type, self._consumer(fn), consumer=f"analytics.{event_type.replace('.', '_')}")
        for request in (api.Report, api.CreatePlan, api.ListPlans, api.CreateCost, api.ListCosts):
            self.serve(request, as_arguments(getattr(self, request.METHOD)))

    def _consumer(self, fn: Any) -> Any:
        async def handle(env: Envelope) -> None:
            await self.store.consume(env, CONSUMER, lambda uow: fn(uow, env))

        return handle
