"""What the deals service's handlers share: the store, the constants, the owner rule.

The handlers are grouped by behaviour in mixins (``pipelines.py``, ``deals.py``, ``events.py``);
:class:`services.deals.service.DealsService` combines them with its table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from services.deals import domain as d
from services.deals.store import DealsStore
from shared.errors import ValidationFailed
from shared.service import Service

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH = 200
"""Deals changed per transaction when a pipeline edit moves or re-weights many of them."""
IMPORT_MAX = 500
TASK_EVENTS = ("task.created", "task.updated", "task.completed", "task.canceled", "task.reassigned")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    return (d.as_utc(at) - EPOCH) // timedelta(microseconds=1)


class DealsBase(Service):
    """The service's state the handlers use (``self.deals``: the store)."""

    name = "deals"

    @property
    def deals(self) -> DealsStore:
        return DealsStore(self.store)

    # ---- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def _owner_for_new_deal(ctx: dict[str, Any], body: Mapping[str, Any]) -> Any:
        owner = body.get("owner_id")
        if ctx.get("role") != "admin":
            owner = owner or ctx.get("user_id")
            if owner != ctx.get("user_id"):
                raise ValidationFailed({"owner_id": "a manager may only create deals it owns"})
        return owner
