"""The tasks service: tasks, reminders, automation rules, workload and the calendar feed.

Collections (database ``<ns>_tasks``):

* ``tasks`` — :meth:`Task.to_doc` documents plus ``rule_key`` (``<tenant>:<action key>``) on tasks
  made by an automation rule (unique: a redelivered or duplicated event makes one task);
* ``rules`` — the tenant's custom rules (``_id`` ``<tenant>:<rule id>``);
* ``settings`` — per tenant (``_id`` = tenant id): ``disabled_rules``, ``stage_tasks``
  (stage id → task templates), ``round_robin`` counters;
* ``users`` — learned from ``user.changed`` (workload rows).

The scheduler (:meth:`TasksService.scheduler_pass`, ``handlers/scheduler.py``) claims due reminders and overdue notices with
one atomic ``find_one_and_update`` inside a transaction that also writes the event to the outbox,
so with several replicas each notice goes out exactly once, and one due while every replica was
down goes out when one comes back.

Events consumed: ``interaction.recorded``, ``contact.created``, ``deal.stage_changed`` (+ the
other types in :data:`RULE_EVENT_TYPES`) for automation rules; ``user.changed``;
``contact.merged``; ``contact.erased``.
Events emitted: ``task.created|updated|completed|canceled|reassigned|reminder_due|overdue`` and
the rule commands ``rule.assign_owner_requested``, ``rule.move_deal_requested``,
``rule.webhook_requested`` (consumed by contacts, deals and the gateway's webhook delivery).
"""

from __future__ import annotations

from typing import ClassVar

from pymongo import ASCENDING, IndexModel

from services.tasks import api
from services.tasks.handlers.base import (
    RULE_EVENT_TYPES,
    _as_stored,
    _dedupe_key,
    _event_time,
    _parse_stage_tasks,
    _parse_when,
    _rule_from_doc,
    _rule_to_doc,
)
from services.tasks.handlers.events import EventHandlers
from services.tasks.handlers.rules import RuleHandlers
from services.tasks.handlers.scheduler import SchedulerHandlers
from services.tasks.handlers.tasks import TaskHandlers
from shared.service import as_arguments

__all__ = [
    "RULE_EVENT_TYPES",
    "TasksService",
    "_as_stored",
    "_dedupe_key",
    "_event_time",
    "_parse_stage_tasks",
    "_parse_when",
    "_rule_from_doc",
    "_rule_to_doc",
]


REQUESTS: tuple[type[api.Request], ...] = (
    api.CreateTask,
    api.ListTasks,
    api.GetTask,
    api.UpdateTask,
    api.CompleteTask,
    api.CancelTask,
    api.ReassignTasks,
    api.Workload,
    api.Calendar,
    api.ExportContact,
    api.ListRules,
    api.GetRule,
    api.CreateRule,
    api.UpdateRule,
    api.DeleteRule,
)
"""The RPC table: each request of the contract, answered by the handler method of its name."""


class TasksService(SchedulerHandlers, TaskHandlers, RuleHandlers, EventHandlers):
    name = "tasks"
    indexes: ClassVar = {
        "tasks": [
            IndexModel(
                [
                    ("tenant_id", ASCENDING),
                    ("assignee_id", ASCENDING),
                    ("status", ASCENDING),
                    ("due_at", ASCENDING),
                ]
            ),
            IndexModel([("tenant_id", ASCENDING), ("due_at", ASCENDING), ("_id", ASCENDING)]),
            IndexModel([("tenant_id", ASCENDING), ("contact_id", ASCENDING)]),
            IndexModel([("status", ASCENDING), ("reminder_sent_at", ASCENDING), ("remind_at", ASCENDING)]),
            IndexModel([("status", ASCENDING), ("overdue_sent_at", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("rule_key", ASCENDING)], unique=True, sparse=True),
        ],
        "rules": [IndexModel([("tenant_id", ASCENDING), ("created_at", ASCENDING)])],
        "users": [IndexModel([("tenant_id", ASCENDING), ("user_id", ASCENDING)])],
    }

    def setup(self) -> None:
        self._scheduler = None
        for event_type in RULE_EVENT_TYPES:
            self.on(event_type, self.on_rule_event)
        self.on("user.changed", self.on_user_changed)
        self.on("contact.merged", self.on_contact_merged)
        self.on("contact.erased", self.on_contact_erased)
        for request in REQUESTS:
            self.serve(request, as_arguments(getattr(self, request.METHOD)))
