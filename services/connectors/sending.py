"""The outbox worker of conversations: sends each queued message once, through its kind's sender.

Exactly once, across restarts:

1. A send job (``sends``) is written with its message, in one transaction (handlers/send.py).
2. The worker claims a due job with one atomic update that records the attempt (``state:
   sending``, ``attempts + 1``, a lease) before the provider is called.
3. The result is recorded in one transaction with the message's status and its events; a job
   recorded ``done`` or ``failed`` is never claimed again.
4. A job found ``sending`` with an expired lease was cut off by a crash. A sender whose provider
   deduplicates (``resend_safe``: SMTP's fixed Message-ID) repeats it; any other is not repeated
   (the provider may have delivered it): the message fails saying so.

Failures the sender calls ``retryable`` (timeouts before a connection, 5xx, a 429) are repeated
with back-off (doubling from ``CRM_SEND_BACKOFF_S``, at least the provider's ``Retry-After``, which
also holds back the channel's other queued sends) up to ``MAX_ATTEMPTS``; then the message fails
with the provider's reason.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from pymongo import ReturnDocument

from services.connectors.conversations.handlers.delivery import record_failed, record_sent
from services.connectors.senders import get_sender, resend_safe
from services.connectors.senders.base import Attachment, OutboundMessage, SendFailed
from shared.mongo import UnitOfWork

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
INTERRUPTED = (
    "the hub stopped while this message was being sent; it may have been delivered, so it was not sent again"
)


class SendWorker:
    def __init__(self, host: Any) -> None:
        self.host = host
        self.lease_s = host.settings.send_lease_s
        self.backoff_s = host.settings.send_backoff_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while await self.send_one():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("send pass failed", exc_info=True)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass

    async def _claim(self) -> tuple[dict[str, Any], bool] | None:
        now = self.host.clock.now()
        before = await self.host.db.sends.find_one_and_update(
            {"state": {"$in": ["queued", "sending"]}, "next_at": {"$lte": now}},
            {
                "$set": {"state": "sending", "next_at": now + timedelta(seconds=self.lease_s)},
                "$inc": {"attempts": 1},
            },
            sort=[("next_at", 1)],
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            return None
        job = {**before, "attempts": int(before.get("attempts") or 0) + 1}
        return job, before.get("state") == "sending"

    async def send_one(self) -> bool:
        """Claim and send one due job; ``False`` when none is due."""
        claimed = await self._claim()
        if claimed is None:
            return False
        job, interrupted = claimed
        sender = get_sender(job["kind"])
        channel = await self.host.channel(job["channel_id"], fresh=True)
        if sender is None or channel is None or not channel.get("active", True):
            await self._fail(job, "the channel was deleted or switched off")
            return True
        if interrupted and not resend_safe(sender):
            log.warning(
                "interrupted send not repeated", extra={"message_id": job["_id"], "kind": job["kind"]}
            )
            await self._fail(job, INTERRUPTED)
            return True
        message = OutboundMessage(
            idempotency_key=job["_id"],
            conversation_id=job["conversation_id"],
            thread_key=job["thread_key"],
            address=dict(job.get("address") or {}),
            text=job["text"],
            subject=job.get("subject"),
            attachments=tuple(
                Attachment(a["filename"], a.get("content_type") or "application/octet-stream", a.get("url"))
                for a in job.get("attachments") or []
            ),
        )
        try:
            result = await sender.send(
                self.host.channel_view(channel), message, self.host.http, self.host.clock.now()
            )
        except SendFailed as exc:
            await self._failed_attempt(job, exc)
            return True
        except Exception as exc:  # a sender bug: logged, and handled like a failure it cannot judge
            log.exception("sender crashed", extra={"message_id": job["_id"], "kind": job["kind"]})
            retry = resend_safe(sender)
            await self._failed_attempt(
                job, SendFailed(f"internal error ({type(exc).__name__})", retryable=retry)
            )
            return True
        at = self.host.clock.now()

        async def unit(uow: UnitOfWork) -> None:
            done = await uow.db.sends.find_one_and_update(
                {"_id": job["_id"], "state": "sending"},
                {"$set": {"state": "done", "provider_message_id": result.provider_message_id, "done_at": at}},
                session=uow.session,
            )
            if done is not None:
                await record_sent(uow, job, result.provider_message_id, result.status, at)

        await self.host.store.atomic(unit)
        log.info(
            "message sent", extra={"message_id": job["_id"], "kind": job["kind"], "attempt": job["attempts"]}
        )
        return True

    async def _failed_attempt(self, job: dict[str, Any], exc: SendFailed) -> None:
        if not exc.retryable or job["attempts"] >= MAX_ATTEMPTS:
            await self._fail(job, exc.reason)
            return
        now = self.host.clock.now()
        delay = max(self.backoff_s * 2 ** (job["attempts"] - 1), exc.retry_after_s or 0.0)
        until = now + timedelta(seconds=delay)
        await self.host.db.sends.update_one(
            {"_id": job["_id"], "state": "sending"},
            {"$set": {"state": "queued", "next_at": until, "last_error": exc.reason[:500]}},
        )
        if exc.retry_after_s:  # the provider's rate limit holds back the whole channel
            await self.host.db.sends.update_many(
                {"channel_id": job["channel_id"], "state": "queued", "next_at": {"$lt": until}},
                {"$set": {"next_at": until}},
            )
        log.info(
            "send will be retried",
            extra={"message_id": job["_id"], "attempt": job["attempts"], "delay_s": round(delay, 1)},
        )

    async def _fail(self, job: dict[str, Any], reason: str) -> None:
        at = self.host.clock.now()

        async def unit(uow: UnitOfWork) -> None:
            done = await uow.db.sends.find_one_and_update(
                {"_id": job["_id"], "state": {"$in": ["queued", "sending"]}},
                {"$set": {"state": "failed", "error": reason[:500], "done_at": at}},
                session=uow.session,
            )
            if done is not None:
                await record_failed(uow, job, reason, at)

        await self.host.store.atomic(unit)
