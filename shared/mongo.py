"""MongoDB plumbing: one database per service, atomic units of work with an outbox.

A state change and the event announcing it are written in one transaction (the event goes to the
``outbox`` collection). After the commit the events are published at once; if the process dies
first, the outbox sweeper publishes them later. Consumers mark an event processed in the same
transaction as its effect, so a redelivered event has exactly one effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError

from shared import dbprofile
from shared.clock import Clock, SystemClock, new_id
from shared.events import Envelope, make_event

log = logging.getLogger(__name__)
T = TypeVar("T")

Indexes = dict[str, Sequence[IndexModel]]


def mongo_client(url: str) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(
        url,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=5000,
        connectTimeoutMS=5000,
        socketTimeoutMS=30000,
        event_listeners=dbprofile.listeners(),
    )


class AlreadyProcessed(Exception):
    """Raised inside a unit of work when its consumer has seen the event before."""


@dataclass
class UnitOfWork:
    """What a handler may do inside one transaction: write with ``session``, ``emit`` events."""

    db: AsyncDatabase[dict[str, Any]]
    session: AsyncClientSession
    producer: str
    now: datetime
    emitted: list[Envelope] = field(default_factory=list)

    def emit(
        self,
        event_type: str,
        tenant_id: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        caused_by: Envelope | None = None,
        version: int = 1,
    ) -> Envelope:
        env = make_event(
            event_type,
            tenant_id=tenant_id,
            producer=self.producer,
            payload=payload,
            idempotency_key=idempotency_key,
            caused_by=caused_by,
            version=version,
            occurred_at=self.now,
        )
        self.emitted.append(env)
        return env

    def emit_all(
        self,
        tenant_id: str,
        events: Sequence[Mapping[str, Any]],
        *,
        caused_by: Envelope | None = None,
        idempotency_key: str | None = None,
        key_of: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> None:
        """Emit the events a domain function returned (``{"event_type", "payload"}``), in order.
        Keys: ``key_of(event)`` when given; else ``idempotency_key`` for the first and
        ``<idempotency_key>:<i>`` for the i-th after it (none without one)."""
        for i, event in enumerate(events):
            if key_of is not None:
                key: str | None = key_of(event)
            elif idempotency_key is not None:
                key = idempotency_key if i == 0 else f"{idempotency_key}:{i}"
            else:
                key = None
            self.emit(
                event["event_type"], tenant_id, event["payload"], idempotency_key=key, caused_by=caused_by
            )

    async def mark_processed(self, consumer: str, key: str) -> None:
        """Record ``key`` as handled by ``consumer``; raises :class:`AlreadyProcessed` if it was."""
        try:
            await self.db.processed.insert_one(
                {"_id": f"{consumer}:{key}", "at": self.now}, session=self.session
            )
        except DuplicateKeyError as exc:
            raise AlreadyProcessed(key) from exc


Publish = Callable[[Envelope], Awaitable[None]]


class BatchFailed(Exception):
    """A unit of work inside a batch failed: the batch's transaction is rolled back and the
    consumer handles its events one by one (each in its own transaction, with its own retries)."""


@dataclass
class _Batch:
    """One transaction shared by the units of work of a batch of events (see :meth:`Store.batch`)."""

    store: Store
    session: AsyncClientSession
    emitted: list[Envelope] = field(default_factory=list)
    markers: dict[str, datetime] = field(default_factory=dict)


_BATCH: ContextVar[_Batch | None] = ContextVar("crm_store_batch", default=None)


class Store:
    """A service's database, its outbox, and the transactions that tie them together."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        db_name: str,
        producer: str,
        publish: Publish | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.db: AsyncDatabase[dict[str, Any]] = client[db_name]
        self.producer = producer
        self.publish = publish
        self.clock = clock or SystemClock()
        self._sweeper: asyncio.Task[None] | None = None

    async def ensure_indexes(self, indexes: Indexes) -> None:
        base: Indexes = {
            "outbox": [IndexModel([("created_at", 1)]), IndexModel([("claimed_until", 1)])],
            "processed": [IndexModel([("at", 1)], expireAfterSeconds=14 * 24 * 3600)],
        }
        for coll, models in {**base, **indexes}.items():
            if models:
                await self.db[coll].create_indexes(list(models))

    async def atomic(
        self,
        fn: Callable[[UnitOfWork], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        attempts: int = 5,
        budget_s: float = 120.0,
    ) -> T:
        """Run ``fn`` in one transaction; its emitted events are written to the outbox in it and
        published right after the commit.

        ``retry_on``: exceptions that mean "a race was lost, run the unit again" (an identity
        claimed by another capture, a deal changed between read and write): the transaction is
        rolled back and ``fn`` runs again, at most ``attempts`` times in all.

        Transient transaction errors (write conflicts) are retried with jittered back-off for up to
        ``budget_s``: longer than the server's transaction lifetime (60 s), so a write that collides
        with a transaction abandoned by a killed process waits for the server to reap it instead of
        failing the message towards the dead-letter queue. Inside :meth:`batch` the unit joins the
        batch's transaction instead (any failure then fails the batch: :class:`BatchFailed`)."""
        batch = _BATCH.get()
        if batch is not None and batch.store is self:
            return await self._in_batch(batch, fn)
        for attempt in range(1, attempts + 1):
            try:
                return await self._transaction(fn, budget_s)
            except retry_on:
                if attempt >= attempts:
                    raise
        raise AssertionError("unreachable")

    async def _transaction(self, fn: Callable[[UnitOfWork], Awaitable[T]], budget_s: float) -> T:
        deadline = time.monotonic() + budget_s
        attempt = 0
        while True:
            async with self.client.start_session() as session:
                uow = UnitOfWork(self.db, session, self.producer, self.clock.now())
                outbox_id: str | None = None
                try:
                    await session.start_transaction()
                    result = await fn(uow)
                    outbox_id = await self._write_outbox(uow.emitted, uow.now, session)
                    await session.commit_transaction()
                except BaseException as exc:
                    if session.in_transaction:
                        await session.abort_transaction()
                    if _transient(exc) and time.monotonic() < deadline:
                        # full jitter: writers that conflicted must not collide again
                        await asyncio.sleep(random.uniform(0, min(2.0, 0.01 * 2**attempt)))  # noqa: S311
                        attempt += 1
                        continue
                    raise
            await self._publish_now(uow.emitted, outbox_id)
            return result

    async def _in_batch(self, batch: _Batch, fn: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        uow = UnitOfWork(self.db, batch.session, self.producer, self.clock.now(), emitted=batch.emitted)
        try:
            result = await fn(uow)
        except (AlreadyProcessed, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise BatchFailed(str(exc)) from exc
        return result

    async def consume(
        self,
        env: Envelope,
        consumer: str,
        fn: Callable[[UnitOfWork], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        attempts: int = 5,
    ) -> T | None:
        """Apply ``fn`` once per event for ``consumer``: a repeat is acknowledged and ignored.
        ``retry_on``/``attempts`` as in :meth:`atomic` (inside a batch a lost race fails the batch,
        and the event is then handled alone, with these retries)."""
        batch = _BATCH.get()
        if batch is not None and batch.store is self:
            key = f"{consumer}:{env.event_id}"
            if key in batch.markers:
                return None  # the same event twice in one batch (a redelivered copy)
            result = await self._in_batch(batch, fn)
            batch.markers[key] = self.clock.now()
            return result

        async def unit(uow: UnitOfWork) -> T:
            await uow.mark_processed(consumer, env.event_id)
            return await fn(uow)

        try:
            return await self.atomic(unit, retry_on=retry_on, attempts=attempts)
        except AlreadyProcessed:
            log.debug("duplicate event ignored", extra={"consumer": consumer, "event_id": env.event_id})
            return None

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Handle a batch of events in one transaction: every :meth:`consume` and :meth:`atomic`
        inside joins it; the processed markers are written with one bulk insert and the events of
        the whole batch as one outbox document, then published after the commit. An event seen
        before makes the bulk insert fail, and any failing unit fails the batch: either way the
        transaction is rolled back and :class:`BatchFailed` raised, so the caller handles the
        events one by one (where a repeat is recognised alone)."""
        if _BATCH.get() is not None:
            yield  # nested: the outer batch owns the transaction
            return
        async with self.client.start_session() as session:
            batch = _Batch(self, session)
            token = _BATCH.set(batch)
            outbox_id: str | None = None
            try:
                await session.start_transaction()
                yield
                if batch.markers:
                    await self.db.processed.insert_many(
                        [{"_id": k, "at": at} for k, at in batch.markers.items()],
                        ordered=False,
                        session=session,
                    )
                outbox_id = await self._write_outbox(batch.emitted, self.clock.now(), session)
                await session.commit_transaction()
            except BaseException as exc:
                if session.in_transaction:
                    with contextlib.suppress(Exception):
                        await session.abort_transaction()
                if isinstance(exc, BatchFailed | asyncio.CancelledError):
                    raise
                raise BatchFailed(str(exc)) from exc
            finally:
                _BATCH.reset(token)
        await self._publish_now(batch.emitted, outbox_id)

    async def _write_outbox(
        self, events: list[Envelope], now: datetime, session: AsyncClientSession
    ) -> str | None:
        """The events of one transaction, as one outbox document written in it."""
        if not events:
            return None
        doc = {
            "_id": new_id(),
            "envelopes": [e.model_dump(mode="json") for e in events],
            "created_at": now,
            "claimed_until": None,
        }
        await self.db.outbox.insert_one(doc, session=session)
        return str(doc["_id"])

    async def _publish_now(self, events: list[Envelope], outbox_id: str | None) -> None:
        """Publish a committed transaction's events (confirms awaited together), then drop its
        outbox document; on any failure the document stays for the sweeper."""
        if not events or self.publish is None or outbox_id is None:
            return
        publish = self.publish
        results = await asyncio.gather(*(publish(env) for env in events), return_exceptions=True)
        if any(isinstance(r, BaseException) for r in results):
            log.warning("publish failed; the outbox sweeper will retry", extra={"outbox_id": outbox_id})
            return
        await self.db.outbox.delete_one({"_id": outbox_id})

    async def sweep_outbox(self, older_than_s: float = 2.0, limit: int = 200) -> int:
        """Publish events whose fast-path publish never happened (crash, broker down). Returns
        the number of events published."""
        if self.publish is None:
            return 0
        sent = 0
        now = self.clock.now()
        for _ in range(limit):
            doc = await self.db.outbox.find_one_and_update(
                {
                    "created_at": {"$lt": now - timedelta(seconds=older_than_s)},
                    "$or": [{"claimed_until": None}, {"claimed_until": {"$lt": now}}],
                },
                {"$set": {"claimed_until": now + timedelta(seconds=30)}},
                sort=[("created_at", 1)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            # ``envelope``: a document of the version that wrote one outbox row per event
            envelopes = doc.get("envelopes") or [doc["envelope"]]
            for raw in envelopes:
                await self.publish(Envelope.model_validate(raw))
            await self.db.outbox.delete_one({"_id": doc["_id"]})
            sent += len(envelopes)
        return sent

    def start_sweeper(self, interval_s: float) -> None:
        async def loop() -> None:
            while True:
                try:
                    n = await self.sweep_outbox()
                    if n:
                        log.info("outbox sweeper published", extra={"count": n, "db": self.db.name})
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("outbox sweep failed", exc_info=True)
                await asyncio.sleep(interval_s)

        self._sweeper = asyncio.create_task(loop(), name=f"outbox-sweeper:{self.db.name}")

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except (asyncio.CancelledError, Exception):
                pass
            self._sweeper = None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError"):
        return True
    return isinstance(exc, OperationFailure) and exc.code in (112, 251)  # WriteConflict, NoSuchTransaction


def unavailable(exc: BaseException | None) -> bool:
    """The database could not be reached (down, restarting, a network cut): not the event's
    fault. Looks through :class:`BatchFailed` and other wrappers to the cause."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ConnectionFailure):
            return True
        exc = exc.__cause__
        seen += 1
    return False


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    try:
        await client.admin.command("ping")
        return True
    except PyMongoError:
        return False
