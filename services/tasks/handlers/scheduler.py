"""The scheduler: due reminders and overdue notices, claimed once across replicas, in a background loop."""

from __future__ import annotations

import asyncio
import contextlib

from pymongo import ASCENDING, ReturnDocument

from services.tasks import domain as d
from services.tasks.handlers.base import (
    TasksBase,
    _utc_iso,
    log,
)
from shared.mongo import UnitOfWork


class SchedulerHandlers(TasksBase):
    _scheduler: asyncio.Task[None] | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    async def on_start(self) -> None:
        interval = float(self.settings.tasks_scheduler_s)

        async def loop() -> None:
            while True:
                try:
                    await self.scheduler_pass()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("task scheduler pass failed", exc_info=True)
                await asyncio.sleep(interval)

        self._scheduler = asyncio.create_task(loop(), name="tasks-scheduler")

    async def on_stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._scheduler
            self._scheduler = None

    # ---- scheduler --------------------------------------------------------------------------

    async def scheduler_pass(self) -> dict[str, int]:
        """Claim and announce every reminder and overdue notice due now; safe to run on several
        replicas at once (each claim is one atomic update in the transaction that emits)."""
        counts = {"reminders": 0, "overdue": 0}
        for _ in range(self.scheduler_batch):
            if not await self.store.atomic(self._claim_reminder):
                break
            counts["reminders"] += 1
        for _ in range(self.scheduler_batch):
            if not await self.store.atomic(self._claim_overdue):
                break
            counts["overdue"] += 1
        if counts["reminders"] or counts["overdue"]:
            log.info("task notices sent", extra=counts)
        return counts

    async def _claim_reminder(self, uow: UnitOfWork) -> bool:
        doc = await uow.db.tasks.find_one_and_update(
            d.reminder_claim_filter(uow.now),
            d.reminder_claim_update(uow.now),
            sort=[("remind_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
            session=uow.session,
        )
        if doc is None:
            return False
        task = d.Task.from_doc(doc)
        ev = d.reminder_due_event(task)
        stamp = _utc_iso(task.remind_at) if task.remind_at else ""
        uow.emit(
            ev["event_type"], task.tenant_id, ev["payload"], idempotency_key=f"reminder:{task.id}:{stamp}"
        )
        return True

    async def _claim_overdue(self, uow: UnitOfWork) -> bool:
        doc = await uow.db.tasks.find_one_and_update(
            d.overdue_claim_filter(uow.now),
            d.overdue_claim_update(uow.now),
            sort=[("due_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
            session=uow.session,
        )
        if doc is None:
            return False
        task = d.Task.from_doc(doc)
        ev = d.overdue_event(task)
        uow.emit(
            ev["event_type"],
            task.tenant_id,
            ev["payload"],
            idempotency_key=f"overdue:{task.id}:{_utc_iso(task.due_at)}",
        )
        return True
