"""IMAP poller: fetch new mail from a mailbox and hand each raw message to a durable sink.

imapclient is synchronous; every IMAP call runs in a worker thread (``asyncio.to_thread``), one at a
time, so one poller owns one connection. The storage it needs is behind three Protocols the
connectors service implements on MongoDB:

- :class:`CursorStore` — per folder, the UIDVALIDITY and the last UID handed over;
- :class:`MailSink` — the durable hand-off of one raw message (e.g. publish with confirm);
- :class:`Lease` — one poller per mailbox across replicas.

Delivery is at-least-once: the cursor moves only after ``deliver`` returned. Anything delivered
twice (a crash between deliver and cursor save, a UIDVALIDITY change that forces a resync) carries
the same ``imap:<channel>:<Message-ID>`` idempotency key and is deduplicated downstream.

Messages are fetched with ``BODY.PEEK[]`` from folders opened read-only (EXAMINE): polling never
marks mail as read.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import re
import socket
import ssl as ssl_lib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from services.connectors.mail.parse import FolderRole
from services.connectors.outbound import mail_security
from shared.netguard import IMAP_PORTS, PinnedContext, UrlGuard, UrlRefused

log = logging.getLogger(__name__)

SslMode = Literal["tls", "starttls", "none"]

SENT_FOLDER_NAMES = (
    "Sent",
    "Sent Messages",
    "Sent Items",
    "Sent Mail",
    "Отправленные",
    "Отправленные элементы",
    "Исходящие",
)
MAX_IDLE_S = 25 * 60
"""RFC 2177: re-issue IDLE at least every 29 minutes; servers drop idle clients at 30."""


# ---- storage interfaces -------------------------------------------------------------------


class CursorStore(Protocol):
    async def load(self, channel_id: str) -> dict[str, tuple[int, int]]:
        """``{folder: (uidvalidity, last_uid)}`` for every folder synced so far."""
        ...

    async def save(self, channel_id: str, folder: str, uidvalidity: int, last_uid: int) -> None: ...


class MailSink(Protocol):
    async def deliver(self, channel_id: str, folder: str, uid: int, raw: bytes, *, role: FolderRole) -> None:
        """Make ``raw`` durable (return only once it is). ``role``: ``inbox`` or ``sent``."""
        ...


class Lease(Protocol):
    async def acquire(self, channel_id: str, owner: str, ttl_s: float) -> bool:
        """True when ``owner`` now holds the mailbox (free, expired, or already its own)."""
        ...

    async def renew(self, channel_id: str, owner: str, ttl_s: float) -> bool:
        """Extend the lease; False when ``owner`` no longer holds it."""
        ...

    async def release(self, channel_id: str, owner: str) -> None: ...


# ---- config, reports, health ---------------------------------------------------------------


@dataclass(frozen=True)
class ImapConfig:
    host: str
    username: str
    password: str
    port: int | None = None
    """Default 993 for ``tls``, 143 otherwise."""
    ssl: SslMode = "tls"
    folders: tuple[str, ...] | None = None
    """None: INBOX and the Sent folder (SPECIAL-USE ``\\Sent``, else a common name)."""
    since: date | None = None
    """First sync (and resync after a UIDVALIDITY change) takes mail SINCE this date."""
    poll_interval_s: float = 60.0
    idle: bool = True
    """Use IDLE on the first folder when the server offers it."""
    idle_timeout_s: float = MAX_IDLE_S
    connect_timeout_s: float = 20.0
    command_timeout_s: float = 60.0
    batch_size: int = 50
    max_message_bytes: int = 25 * 1024 * 1024
    """Larger messages are fetched truncated to this many bytes."""
    lease_ttl_s: float = 120.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    ssl_context: ssl_lib.SSLContext | None = None
    guard: UrlGuard | None = None
    """The outbound guard (``CRM_ALLOW_PRIVATE_URLS``); None = the default, private refused."""

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.ssl == "tls" else 143)


DEFAULT_SINCE_DAYS = 30


def config_from_channel(config: Mapping[str, Any], secrets: Mapping[str, str], *, today: date) -> ImapConfig:
    """An :class:`ImapConfig` from an ``imap`` channel's ``config`` and decrypted ``secrets``.

    API.md: ``secrets.password``; ``config.host``, ``port``, ``ssl`` (``tls``/``starttls``/
    ``none``, default ``tls``), ``username``, ``folders`` (default INBOX and Sent), ``since`` (an
    ISO date, default 30 days before ``today``). Raises ``ValueError`` naming the bad field.
    """
    host = str(config.get("host") or "").strip()
    if not host:
        raise ValueError("config.host is required")
    username = str(config.get("username") or "").strip()
    if not username:
        raise ValueError("config.username is required")
    password = secrets.get("password")
    if not password:
        raise ValueError("secrets.password is required")
    mode = mail_security(config, "ssl")
    port: int | None = None
    if config.get("port") not in (None, ""):
        try:
            port = int(config["port"])
        except (TypeError, ValueError):
            raise ValueError("config.port must be a number") from None
        if not 0 < port < 65536:
            raise ValueError("config.port must be between 1 and 65535")
    folders_raw = config.get("folders")
    folders: tuple[str, ...] | None = None
    if folders_raw:
        if isinstance(folders_raw, str) or not all(isinstance(f, str) for f in folders_raw):
            raise ValueError("config.folders must be a list of folder names")
        folders = tuple(f for f in folders_raw if f.strip()) or None
    since_raw = config.get("since")
    if since_raw in (None, ""):
        since = today - timedelta(days=DEFAULT_SINCE_DAYS)
    elif isinstance(since_raw, date):
        since = since_raw
    else:
        try:
            since = date.fromisoformat(str(since_raw)[:10])
        except ValueError:
            raise ValueError("config.since must be an ISO date (YYYY-MM-DD)") from None
    extra: dict[str, Any] = {}
    if config.get("poll_interval_s"):
        extra["poll_interval_s"] = float(config["poll_interval_s"])
    return ImapConfig(
        host=host,
        username=username,
        password=password,
        port=port,
        ssl=mode,  # type: ignore[arg-type]
        folders=folders,
        since=since,
        **extra,
    )


@dataclass(frozen=True)
class FolderReport:
    folder: str
    role: FolderRole
    uidvalidity: int
    last_uid: int
    delivered: int
    resynced: bool
    """True when the cursor was missing or its UIDVALIDITY no longer matched (SINCE search)."""


@dataclass(frozen=True)
class SyncReport:
    folders: tuple[FolderReport, ...]

    @property
    def delivered(self) -> int:
        return sum(f.delivered for f in self.folders)


@dataclass(frozen=True)
class FolderHealth:
    role: FolderRole
    uidvalidity: int
    last_uid: int
    pending: int = 0
    """UIDs seen on the server but not handed over yet (non-zero after a failed sync)."""


@dataclass(frozen=True)
class PollerHealth:
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    """Error class only (``network: TimeoutError``, ``auth``...): never server text or addresses."""
    folders: Mapping[str, FolderHealth]
    lag_s: float | None
    """Seconds since the last successful sync."""
    leased: bool
    idle: bool
    delivered_total: int


NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # socket errors, ssl.SSLError, timeouts
    imaplib.IMAP4.abort,
    EOFError,
)


def describe_error(exc: BaseException) -> str:
    """A health string with no personal data: a category and the exception class."""
    if isinstance(exc, LoginError):
        return "auth: login failed"
    if isinstance(exc, UrlRefused):
        return f"refused: config.host {exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "network: timeout"
    if isinstance(exc, NETWORK_ERRORS):
        return f"network: {type(exc).__name__}"
    if isinstance(exc, IMAPClientError | imaplib.IMAP4.error):
        return f"imap: {type(exc).__name__}"
    if isinstance(exc, DeliveryError):
        return f"deliver: {exc.cause_name}"
    return f"error: {type(exc).__name__}"


class DeliveryError(Exception):
    """The sink refused a message; the cursor stays before it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause_name = type(cause).__name__


# ---- the poller ----------------------------------------------------------------------------

Clock = Callable[[], datetime]
ClientFactory = Callable[[ImapConfig], IMAPClient]


def connect(config: ImapConfig) -> IMAPClient:
    """Open and log in (blocking; run it in a thread). The host passes the outbound guard and the
    socket goes to the address that was checked; TLS still verifies the configured host name."""
    timeout = SocketTimeout(connect=config.connect_timeout_s, read=config.command_timeout_s)
    target = (config.guard or UrlGuard()).resolve_sync(config.host, config.effective_port, ports=IMAP_PORTS)
    context: Any = PinnedContext(config.ssl_context or ssl_lib.create_default_context(), config.host)
    if config.ssl == "tls":
        client = IMAPClient(
            target.address, port=config.effective_port, ssl=True, ssl_context=context, timeout=timeout
        )
    else:
        client = IMAPClient(target.address, port=config.effective_port, ssl=False, timeout=timeout)
        if config.ssl == "starttls":
            client.starttls(context)
    try:
        client.login(config.username, config.password)
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


def _is_sent_name(name: str) -> bool:
    last = re.split(r"[./]", name)[-1].strip().lower()
    return last in {n.lower() for n in SENT_FOLDER_NAMES}


class ImapPoller:
    """Polls one mailbox (one channel). Not safe to share between tasks."""

    def __init__(
        self,
        channel_id: str,
        config: ImapConfig,
        *,
        cursors: CursorStore,
        sink: MailSink,
        lease: Lease,
        owner: str,
        clock: Clock,
        client_factory: ClientFactory = connect,
    ) -> None:
        self.channel_id = channel_id
        self.config = config
        self.cursors = cursors
        self.sink = sink
        self.lease = lease
        self.owner = owner
        self.clock = clock
        self._client_factory = client_factory
        self._client: IMAPClient | None = None
        self._folders: dict[str, FolderRole] | None = None
        self._folder_health: dict[str, FolderHealth] = {}
        self._last_success_at: datetime | None = None
        self._last_error_at: datetime | None = None
        self._last_error: str | None = None
        self._leased = False
        self._idling = False
        self._delivered_total = 0
        self._lease_renewed_at = time.monotonic()

    # -- health --

    def health(self) -> PollerHealth:
        lag = None
        if self._last_success_at is not None:
            lag = max(0.0, (self.clock() - self._last_success_at).total_seconds())
        return PollerHealth(
            last_success_at=self._last_success_at,
            last_error_at=self._last_error_at,
            last_error=self._last_error,
            folders=dict(self._folder_health),
            lag_s=lag,
            leased=self._leased,
            idle=self._idling,
            delivered_total=self._delivered_total,
        )

    def _record_error(self, exc: BaseException) -> None:
        self._last_error_at = self.clock()
        self._last_error = describe_error(exc)
        # Ids and error classes only: never addresses, subjects or server text.
        log.warning("imap poll failed channel=%s error=%s", self.channel_id, self._last_error)

    # -- connection --

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _ensure_client(self) -> IMAPClient:
        if self._client is None:
            self._client = await self._call(self._client_factory, self.config)
            self._folders = None
        return self._client

    async def close(self) -> None:
        """Log out and drop the connection (safe to call any time)."""
        client, self._client = self._client, None
        self._idling = False
        if client is not None:
            try:
                await self._call(client.logout)
            except Exception:
                with contextlib.suppress(Exception):
                    await self._call(client.shutdown)

    async def _resolve_folders(self, client: IMAPClient) -> dict[str, FolderRole]:
        if self._folders is not None:
            return self._folders
        listing: list[tuple[tuple[bytes, ...], bytes, str]] = await self._call(client.list_folders)
        sent_flagged = [name for flags, _, name in listing if b"\\Sent" in flags]
        if self.config.folders:
            roles: dict[str, FolderRole] = {}
            for name in self.config.folders:
                is_sent = name in sent_flagged or _is_sent_name(name)
                roles[name] = "sent" if is_sent and name.upper() != "INBOX" else "inbox"
        else:
            roles = {"INBOX": "inbox"}
            names = [name for _, _, name in listing]
            sent = sent_flagged[:1] or [n for n in names if _is_sent_name(n)][:1]
            if sent:
                roles[sent[0]] = "sent"
        self._folders = roles
        return roles

    async def folders(self) -> dict[str, FolderRole]:
        """The folders this poller syncs and their roles (connects if needed)."""
        return dict(await self._resolve_folders(await self._ensure_client()))

    # -- one pass --

    async def sync_once(self) -> SyncReport:
        """Fetch and deliver everything new in every folder, once.

        Raises on network/IMAP/delivery errors (after recording them in :meth:`health` and
        dropping the connection); whatever was delivered before the error stays acknowledged.
        Callers other than :meth:`run` should hold the mailbox lease.
        """
        try:
            client = await self._ensure_client()
            roles = await self._resolve_folders(client)
            cursors = await self.cursors.load(self.channel_id)
            reports = []
            for folder, role in roles.items():
                reports.append(await self._sync_folder(client, folder, role, cursors.get(folder)))
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._record_error(exc)
            await self.close()
            raise
        self._last_success_at = self.clock()
        return SyncReport(tuple(reports))

    async def _sync_folder(
        self,
        client: IMAPClient,
        folder: str,
        role: FolderRole,
        cursor: tuple[int, int] | None,
    ) -> FolderReport:
        info = await self._call(client.select_folder, folder, readonly=True)
        uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        uidnext = int(info[b"UIDNEXT"]) if b"UIDNEXT" in info else None
        resync = cursor is None or cursor[0] != uidvalidity
        if resync:
            if cursor is not None:
                log.info("imap uidvalidity changed channel=%s: resync", self.channel_id)
            criteria: list[Any] = ["SINCE", self.config.since] if self.config.since else ["ALL"]
            last_uid = 0
            uids = sorted(int(u) for u in await self._call(client.search, criteria))
        else:
            assert cursor is not None
            last_uid = cursor[1]
            if uidnext is not None and uidnext <= last_uid + 1:
                uids = []
            else:
                found = await self._call(client.search, ["UID", f"{last_uid + 1}:*"])
                uids = sorted(int(u) for u in found if int(u) > last_uid)

        delivered = 0
        done = saved = last_uid
        self._folder_health[folder] = FolderHealth(role, uidvalidity, done, len(uids))
        size = max(1, self.config.batch_size)
        for start in range(0, len(uids), size):
            batch = uids[start : start + size]
            bodies = await self._fetch(client, batch)
            try:
                for uid in batch:
                    raw = bodies.get(uid)
                    if raw is not None:  # None: expunged meanwhile
                        try:
                            await self.sink.deliver(self.channel_id, folder, uid, raw, role=role)
                        except Exception as exc:
                            raise DeliveryError(exc) from exc
                        delivered += 1
                        self._delivered_total += 1
                    done = uid
            finally:
                # Saved after each batch, and on failure up to the last message handed over.
                if done > saved:
                    await self.cursors.save(self.channel_id, folder, uidvalidity, done)
                    saved = done
                pending = len([u for u in uids if u > done])
                self._folder_health[folder] = FolderHealth(role, uidvalidity, done, pending)
        # Every UID below UIDNEXT (taken at SELECT) was searched: the older, unmatched ones (before
        # ``since``) are skipped for good. A resync always records the new UIDVALIDITY.
        if uidnext is not None:
            done = max(done, uidnext - 1)
        if resync or done > saved:
            await self.cursors.save(self.channel_id, folder, uidvalidity, done)
        self._folder_health[folder] = FolderHealth(role, uidvalidity, done, 0)
        return FolderReport(folder, role, uidvalidity, done, delivered, resync)

    async def _fetch(self, client: IMAPClient, batch: Sequence[int]) -> dict[int, bytes]:
        limit = self.config.max_message_bytes
        sizes = await self._call(client.fetch, list(batch), ["RFC822.SIZE"])
        small = [u for u in batch if int(sizes.get(u, {}).get(b"RFC822.SIZE", 0)) <= limit]
        large = [u for u in batch if u in sizes and u not in small]
        out: dict[int, bytes] = {}
        if small:
            got = await self._call(client.fetch, small, ["BODY.PEEK[]"])
            for uid, item in got.items():
                body = item.get(b"BODY[]")
                if isinstance(body, bytes):
                    out[int(uid)] = body
        if large:
            got = await self._call(client.fetch, large, [f"BODY.PEEK[]<0.{limit}>"])
            for uid, item in got.items():
                body = next((v for k, v in item.items() if k.startswith(b"BODY[]")), None)
                if isinstance(body, bytes):
                    out[int(uid)] = body
        return out

    # -- the loop --

    async def _wait(self, stop: asyncio.Event, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stop was set meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
        return stop.is_set()

    async def _sleep_leased(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep between polls, renewing the lease often enough that it never lapses."""
        deadline = time.monotonic() + seconds
        step = max(0.05, self.config.lease_ttl_s / 3)
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if await self._wait(stop, min(step, remaining)):
                return
            if time.monotonic() - self._lease_renewed_at >= step and not await self._keep_lease():
                return

    async def _keep_lease(self) -> bool:
        ttl = self.config.lease_ttl_s
        if self._leased:
            self._leased = await self.lease.renew(self.channel_id, self.owner, ttl)
            if not self._leased:
                log.warning("imap lease lost channel=%s", self.channel_id)
                await self.close()
        else:
            self._leased = await self.lease.acquire(self.channel_id, self.owner, ttl)
        self._lease_renewed_at = time.monotonic()
        return self._leased

    async def _idle(self, stop: asyncio.Event, folder: str) -> None:
        """IDLE on ``folder`` until something changes, the timeout passes, or stop is set."""
        client = await self._ensure_client()
        info = await self._call(client.select_folder, folder, readonly=True)
        synced = self._folder_health.get(folder)
        if b"UIDNEXT" in info and synced and int(info[b"UIDNEXT"]) - 1 > synced.last_uid:
            return  # mail arrived between the sync and this SELECT: IDLE would not report it
        limit = min(self.config.idle_timeout_s, MAX_IDLE_S)
        if len(self._folders or {}) > 1:
            limit = min(limit, self.config.poll_interval_s)  # the other folders need polling too
        deadline = time.monotonic() + limit
        await self._call(client.idle)
        self._idling = True
        try:
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                responses = await self._call(client.idle_check, timeout=min(1.0, remaining))
                if any(
                    len(r) > 1 and r[1] in (b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT") for r in responses
                ):
                    break
                if time.monotonic() - self._lease_renewed_at > self.config.lease_ttl_s / 3:
                    if not await self._keep_lease():
                        return
        finally:
            self._idling = False
            if self._client is not None and self._client is client:
                await self._call(self._client.idle_done)

    async def _cycle(self, stop: asyncio.Event) -> None:
        if not await self._keep_lease():
            await self._wait(stop, self.config.poll_interval_s)
            return
        await self.sync_once()
        if stop.is_set():
            return
        client = await self._ensure_client()
        caps: tuple[bytes, ...] = await self._call(client.capabilities)
        roles = await self._resolve_folders(client)
        if self.config.idle and b"IDLE" in caps and roles:
            await self._idle(stop, next(iter(roles)))
        else:
            await self._sleep_leased(stop, self.config.poll_interval_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the lease, sync, IDLE or sleep, repeat until ``stop`` is set.

        Errors are recorded in :meth:`health`, the connection is dropped, and the cycle is retried
        with exponential back-off and jitter (``backoff_initial_s``..``backoff_max_s``).
        """

        async def sleep(seconds: float) -> None:
            await self._wait(stop, seconds)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(
                multiplier=self.config.backoff_initial_s,
                max=self.config.backoff_max_s,
                jitter=self.config.backoff_initial_s,
            ),
            stop=lambda _state: stop.is_set(),
            sleep=sleep,
            reraise=False,
            before_sleep=self._note_retry,
        )
        try:
            while not stop.is_set():
                try:
                    async for attempt in retrying:
                        with attempt:
                            await self._cycle(stop)
                except Exception as exc:  # tenacity RetryError once stop was set
                    if not stop.is_set():
                        self._record_error(exc)
        finally:
            await self.close()
            if self._leased:
                with contextlib.suppress(Exception):
                    await self.lease.release(self.channel_id, self.owner)
                self._leased = False

    def _note_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None:
            self._record_error(exc)


__all__ = [
    "SENT_FOLDER_NAMES",
    "CursorStore",
    "DeliveryError",
    "FolderHealth",
    "FolderReport",
    "ImapConfig",
    "ImapPoller",
    "Lease",
    "MailSink",
    "PollerHealth",
    "SyncReport",
    "config_from_channel",
    "connect",
    "describe_error",
]
