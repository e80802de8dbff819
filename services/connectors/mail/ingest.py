"""Email capture wired into the connectors service: pollers per ``imap`` channel, durable hand-off.

The path of one message::

    ImapPoller ──deliver──▶ mail.received (published persistently, broker confirm)
        │ cursor saved only after deliver returned          │
        ▼                                                   ▼
    imap_cursors                          on_mail_received: parse_message
                                            ├─ skipped (auto-reply, bounce, bulk, internal):
                                            │    counted in the channel's health
                                            └─ captured: ConnectorsService._emit
                                                 → interaction.captured (key imap:<ch>:<Message-ID>)

Exactly once on the card: the cursor moves only after the raw message is in the broker, so
nothing is skipped; whatever is handed over twice (a crash between deliver and cursor save, a
resync after a UIDVALIDITY change, two replicas overlapping after a lease lapsed) carries the same
idempotency key, so ``interaction.captured`` has the same event id and contacts records it once.

One poller per mailbox across replicas: every replica runs a poller task per active ``imap``
channel, but only the holder of the channel's lease (``imap_leases``, a MongoDB document with an
expiry, taken atomically) talks to the server; the others wait for it to lapse.

Channel health (``channels.health``): ``last_success_at``, ``last_error_at``, ``last_error`` (an
error class, never server text or addresses), ``lag_s``, ``state``, ``idle``, and ``cursor``
``{folder: {uidvalidity, last_uid, pending, role}}``; counters (once per Message-ID) ``received``,
``skipped_<reason>`` (``auto_reply``, ``bounce``, ``bulk``, ``no_client``) and ``duplicates``
(handed over again, e.g. after a UIDVALIDITY change, and recognised).

Channel config read here besides the poller's: ``address`` (the mailbox's own address when the
login is not one), ``forward_mode`` (a mailbox staff forward or BCC client mail to: a forward is
attributed to the original sender), ``max_attachment_bytes``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.connectors.mail.parse import FolderRole, parse_message
from services.connectors.mail.poller import (
    ClientFactory,
    ImapPoller,
    PollerHealth,
    config_from_channel,
    connect,
)
from shared.clock import iso
from shared.events import Envelope, make_event
from shared.mongo import UnitOfWork
from shared.netguard import UrlGuard

if TYPE_CHECKING:
    from services.connectors.main import ConnectorsService

log = logging.getLogger(__name__)

EVENT_MAIL_RECEIVED = "mail.received"
CONSUMER_MAIL = "connectors.mail"
"""Queue of ``mail.received`` and the processed-marker name of its health counters."""
DEFAULT_MAX_ATTACHMENT_BYTES = 256 * 1024
STOP_GRACE_S = 15.0
MAX_HANDOFF_BYTES = 8 * 1024 * 1024
"""Larger messages are fetched truncated to this (base64 in one broker message must stay well
under RabbitMQ's ``max_message_size``, 16 MiB by default since 4.0). Attachment bytes are never
kept, and the text parts come first, so the tail lost is attachments."""
SEEN_TTL_S = 400 * 24 * 3600
"""How long a Message-ID is remembered as handled (a resync re-reads at most ``since`` back)."""


# ---- MongoDB implementations of the poller's storage protocols ----------------------------


class MongoCursorStore:
    """Per folder ``(UIDVALIDITY, last UID)`` in ``imap_cursors``; one document per folder.

    A save never moves a cursor backwards within the same UIDVALIDITY (a poller that lost its
    lease and finishes late cannot undo its successor's progress); a different UIDVALIDITY always
    replaces the stored one.
    """

    def __init__(self, db: Any, clock: Any) -> None:
        self.coll = db.imap_cursors
        self.clock = clock

    @staticmethod
    def key(channel_id: str, folder: str) -> str:
        return f"{channel_id}/{folder}"

    async def load(self, channel_id: str) -> dict[str, tuple[int, int]]:
        docs = await self.coll.find({"channel_id": channel_id}).to_list(None)
        return {d["folder"]: (int(d["uidvalidity"]), int(d["last_uid"])) for d in docs}

    async def save(self, channel_id: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        flt = {
            "_id": self.key(channel_id, folder),
            "$or": [{"uidvalidity": {"$ne": uidvalidity}}, {"last_uid": {"$lt": last_uid}}],
        }
        doc = {
            "channel_id": channel_id,
            "folder": folder,
            "uidvalidity": uidvalidity,
            "last_uid": last_uid,
            "updated_at": self.clock.now(),
        }
        try:
            await self.coll.update_one(flt, {"$set": doc}, upsert=True)
        except DuplicateKeyError:
            pass  # the stored cursor is already at or past this one

    async def forget(self, channel_id: str) -> None:
        await self.coll.delete_many({"channel_id": channel_id})


class MongoLease:
    """One holder per mailbox: ``imap_leases`` ``{_id: channel_id, owner, expires_at}``."""

    def __init__(self, db: Any, clock: Any) -> None:
        self.coll = db.imap_leases
        self.clock = clock

    async def acquire(self, channel_id: str, owner: str, ttl_s: float) -> bool:
        now = self.clock.now()
        try:
            doc = await self.coll.find_one_and_update(
                {"_id": channel_id, "$or": [{"owner": owner}, {"expires_at": {"$lte": now}}]},
                {"$set": {"owner": owner, "expires_at": now + timedelta(seconds=ttl_s)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # held by another owner and not expired
        return doc is not None and doc.get("owner") == owner

    async def renew(self, channel_id: str, owner: str, ttl_s: float) -> bool:
        res = await self.coll.update_one(
            {"_id": channel_id, "owner": owner},
            {"$set": {"expires_at": self.clock.now() + timedelta(seconds=ttl_s)}},
        )
        return bool(res.matched_count)

    async def release(self, channel_id: str, owner: str) -> None:
        await self.coll.delete_one({"_id": channel_id, "owner": owner})


class BrokerMailSink:
    """Hands a raw message over by publishing ``mail.received`` persistently, with confirm.

    ``deliver`` returns only once the broker has the message (so the cursor may move). The event
    id is fresh each time: identity of the *message* is its Message-ID, applied downstream.
    """

    def __init__(self, service: ConnectorsService, tenant_id: str) -> None:
        self.service = service
        self.tenant_id = tenant_id

    async def deliver(self, channel_id: str, folder: str, uid: int, raw: bytes, *, role: FolderRole) -> None:
        env = make_event(
            EVENT_MAIL_RECEIVED,
            tenant_id=self.tenant_id,
            producer=self.service.name,
            payload={
                "channel_id": channel_id,
                "folder": folder,
                "uid": uid,
                "role": role,
                "raw_b64": base64.b64encode(raw).decode("ascii"),
            },
        )
        await self.service.rt.publisher.publish(env, mandatory=True)


# ---- the supervisor ---------------------------------------------------------------------


class ThreadedPoller(ImapPoller):
    """An :class:`ImapPoller` whose blocking IMAP calls run on a thread of its own.

    The poller makes one call at a time, and while idling it makes them back to back (1 s IDLE
    checks): on the loop's shared default executor (a handful of threads) a few mailboxes would
    starve each other and everything else that needs a thread (DNS lookups among them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"imap-{self.channel_id}")

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))


@dataclass
class _Running:
    poller: ThreadedPoller
    stop: asyncio.Event
    task: asyncio.Task[None]
    fingerprint: tuple[Any, ...]


def _fingerprint(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What a running poller depends on: a change restarts it."""
    return (doc["tenant_id"], repr(sorted((doc.get("config") or {}).items())), doc.get("secrets_enc"))


def mailbox_address(config: dict[str, Any]) -> str:
    """The mailbox's own address: ``config.address``, else the login when it is an address."""
    for key in ("address", "username"):
        value = str(config.get(key) or "").strip().lower()
        if "@" in value:
            return value
    return ""


class MailIngest:
    """Runs the IMAP pollers of the connectors service and turns what they hand over into touches.

    ``setup()`` (from ``ConnectorsService.setup``) subscribes ``mail.received``; ``start()`` /
    ``stop()`` (from ``on_start`` / ``on_stop``) run the supervisor that keeps one poller task per
    active ``imap`` channel, restarts it when the channel's config or secrets change and stops it
    when the channel is deactivated or deleted.
    """

    def __init__(
        self,
        service: ConnectorsService,
        *,
        interval_s: float = 2.0,
        client_factory: ClientFactory = connect,
        owner: str | None = None,
    ) -> None:
        self.service = service
        self.interval_s = interval_s
        self.client_factory = client_factory
        self.owner = owner or f"poller-{uuid.uuid4().hex}"
        self.cursors = MongoCursorStore(service.db, service.clock)
        self.lease = MongoLease(service.db, service.clock)
        self._running: dict[str, _Running] = {}
        self._config_errors: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --

    def setup(self) -> None:
        self.service.on(EVENT_MAIL_RECEIVED, self.on_mail_received, consumer=CONSUMER_MAIL)

    async def start(self) -> None:
        db = self.service.db
        await db.imap_cursors.create_index([("channel_id", ASCENDING)])
        await db.imap_seen.create_index([("at", ASCENDING)], expireAfterSeconds=SEEN_TTL_S)
        self._task = asyncio.create_task(self._supervise(), name="connectors-imap")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await asyncio.gather(*(self._stop_one(cid) for cid in list(self._running)), return_exceptions=True)

    async def _supervise(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("imap supervisor pass failed", exc_info=True)
            await asyncio.sleep(self.interval_s)

    # -- pollers --

    async def reconcile(self) -> None:
        """Start, restart and stop pollers to match the active ``imap`` channels; write health."""
        docs = await self.service.db.channels.find({"kind": "imap", "active": {"$ne": False}}).to_list(None)
        wanted = {d["_id"]: d for d in docs}
        for cid, running in list(self._running.items()):
            doc = wanted.get(cid)
            if doc is None or _fingerprint(doc) != running.fingerprint or running.task.done():
                await self._stop_one(cid)
        for cid, doc in wanted.items():
            if cid not in self._running:
                await self._start_one(doc)
        for cid in list(self._config_errors):
            if cid not in wanted:
                del self._config_errors[cid]
        await self._write_health()

    async def _start_one(self, doc: dict[str, Any]) -> None:
        cid = doc["_id"]
        svc = self.service
        try:
            view = svc.channel_view(doc)
            config = config_from_channel(view.config, view.secrets, today=svc.clock.now().date())
            config = replace(
                config,
                max_message_bytes=min(config.max_message_bytes, MAX_HANDOFF_BYTES),
                guard=UrlGuard.from_settings(getattr(svc, "settings", None)),
            )
        except Exception as exc:  # ValueError names the field; a broken secret is a class name
            reason = f"config: {exc}" if isinstance(exc, ValueError) else f"config: {type(exc).__name__}"
            if self._config_errors.get(cid) != reason:
                self._config_errors[cid] = reason
                await svc.db.channels.update_one(
                    {"_id": cid},
                    {
                        "$set": {
                            "health.last_error_at": svc.clock.now(),
                            "health.last_error": reason,
                            "health.state": "misconfigured",
                        }
                    },
                )
            return
        self._config_errors.pop(cid, None)
        poller = ThreadedPoller(
            cid,
            config,
            cursors=self.cursors,
            sink=BrokerMailSink(svc, doc["tenant_id"]),
            lease=self.lease,
            owner=self.owner,
            clock=svc.clock.now,
            client_factory=self.client_factory,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop), name=f"imap-{cid}")
        self._running[cid] = _Running(poller, stop, task, _fingerprint(doc))
        log.info("imap poller started channel=%s", cid)

    async def _stop_one(self, cid: str) -> None:
        running = self._running.pop(cid, None)
        if running is None:
            return
        running.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(running.task), timeout=STOP_GRACE_S)
        except TimeoutError:  # stuck in a blocking IMAP call: give up on a clean logout
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running.task
        except asyncio.CancelledError:  # we are being stopped ourselves: take the poller along
            running.task.cancel()
            raise
        except Exception:
            log.warning("imap poller ended with an error channel=%s", cid, exc_info=True)
        finally:
            # A call still blocked in the thread (after a cancel) finishes on its own timeout.
            running.poller.executor.shutdown(wait=False)
        log.info("imap poller stopped channel=%s", cid)

    # -- health --

    async def _write_health(self) -> None:
        for cid, running in list(self._running.items()):
            h = running.poller.health()
            if not h.leased:
                continue  # another replica polls this mailbox: its health is the one that counts
            await self.service.db.channels.update_one(
                {"_id": cid}, {"$set": health_fields(h, self.service.clock.now())}
            )

    # -- the consumer --

    async def on_mail_received(self, env: Envelope) -> None:
        """Parse one handed-over message; emit it as a touch, or count why it is not one."""
        svc = self.service
        p = env.payload
        doc = await svc.channel(p["channel_id"], fresh=True)
        if doc is None:
            log.warning("mail for a deleted channel dropped channel=%s", p["channel_id"])
            return
        config = doc.get("config") or {}
        tenant = await svc.db.tenants.find_one({"_id": doc["tenant_id"]})
        own_domains = list(((tenant or {}).get("settings") or {}).get("own_domains") or [])
        try:
            max_bytes = int(config.get("max_attachment_bytes") or DEFAULT_MAX_ATTACHMENT_BYTES)
        except (TypeError, ValueError):
            max_bytes = DEFAULT_MAX_ATTACHMENT_BYTES
        parsed = parse_message(
            base64.b64decode(p["raw_b64"]),
            mailbox_address=mailbox_address(config),
            own_domains=own_domains,
            folder_role="sent" if p.get("role") == "sent" else "inbox",
            channel_id=doc["_id"],
            now=svc.clock.now(),
            max_attachment_bytes=max_bytes,
            forward_mode=bool(config.get("forward_mode")),
        )
        seen = await svc.db.imap_seen.find_one({"_id": parsed.idempotency_key})
        if seen is not None:
            counter = "duplicates"  # handed over again (resync, restart): already on its card
        elif parsed.captured:
            await svc._emit(env, doc, list(parsed.captured))
            counter = "received"
        else:
            counter = f"skipped_{parsed.skipped or 'unknown'}"
        log.info("mail handled channel=%s folder_role=%s outcome=%s", doc["_id"], p.get("role"), counter)

        async def count(uow: UnitOfWork) -> None:
            nonlocal counter
            if counter != "duplicates":
                again = await uow.db.imap_seen.find_one({"_id": parsed.idempotency_key}, session=uow.session)
                if again is not None:  # a parallel copy got there first
                    counter = "duplicates"
                else:
                    await uow.db.imap_seen.insert_one(
                        {"_id": parsed.idempotency_key, "channel_id": doc["_id"], "at": uow.now},
                        session=uow.session,
                    )
            await uow.db.channels.update_one(
                {"_id": doc["_id"]}, {"$inc": {f"health.{counter}": 1}}, session=uow.session
            )

        await svc.store.consume(env, CONSUMER_MAIL, count)


def health_fields(h: PollerHealth, now: datetime) -> dict[str, Any]:
    """``$set`` fields of ``channels.health`` from a poller's health (no personal data)."""
    out: dict[str, Any] = {
        "health.lag_s": None if h.lag_s is None else round(h.lag_s, 1),
        "health.idle": h.idle,
        "health.checked_at": iso(now),
        "health.cursor": {
            folder: {
                "role": f.role,
                "uidvalidity": f.uidvalidity,
                "last_uid": f.last_uid,
                "pending": f.pending,
            }
            for folder, f in h.folders.items()
        },
    }
    if h.last_success_at is not None:
        out["health.last_success_at"] = h.last_success_at
    if h.last_error_at is not None:
        out["health.last_error_at"] = h.last_error_at
        out["health.last_error"] = h.last_error
    failing = h.last_error_at is not None and (
        h.last_success_at is None or h.last_error_at > h.last_success_at
    )
    out["health.state"] = "failing" if failing else ("ok" if h.last_success_at else "starting")
    if not h.folders:
        del out["health.cursor"]  # keep the last known cursor until this poller has synced
    return out


__all__ = [
    "CONSUMER_MAIL",
    "EVENT_MAIL_RECEIVED",
    "BrokerMailSink",
    "MailIngest",
    "MongoCursorStore",
    "MongoLease",
    "ThreadedPoller",
    "health_fields",
    "mailbox_address",
]
