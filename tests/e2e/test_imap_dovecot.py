"""The IMAP poller against a real Dovecot, with in-memory cursor store, sink and lease.

Needs ``dovecot`` (``apt-get install -y dovecot-imapd``); the harness runs a private instance on a
loopback port per test.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

import pytest

from services.connectors.mail.parse import FolderRole, parse_message
from services.connectors.mail.poller import ImapConfig, ImapPoller
from shared.netguard import UrlGuard
from tests.support.dovecot import (
    DovecotServer,
    append_message,
    dovecot_server,
    folder_status,
    free_port,
    reset_uidvalidity,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

CHANNEL = "ch-imap-1"
MAILBOX = "sales@corp.example"


def now() -> datetime:
    return datetime.now(UTC)


# ---- in-memory fakes of the storage protocols ---------------------------------------------


class MemoryCursors:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, tuple[int, int]]] = {}
        self.saves: list[tuple[str, int, int]] = []

    async def load(self, channel_id: str) -> dict[str, tuple[int, int]]:
        return dict(self.data.get(channel_id, {}))

    async def save(self, channel_id: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        self.data.setdefault(channel_id, {})[folder] = (uidvalidity, last_uid)
        self.saves.append((folder, uidvalidity, last_uid))


@dataclass(frozen=True)
class Delivered:
    owner: str
    folder: str
    uid: int
    role: FolderRole
    key: str
    direction: str | None


class MemorySink:
    """Parses like the connectors service will, so tests see idempotency keys."""

    def __init__(self, owner: str = "a", fail_on_uid: int | None = None) -> None:
        self.owner = owner
        self.fail_on_uid = fail_on_uid
        self.items: list[Delivered] = []
        self.log: list[Delivered] | None = None  # shared log across pollers when set

    async def deliver(self, channel_id: str, folder: str, uid: int, raw: bytes, *, role: FolderRole) -> None:
        if uid == self.fail_on_uid:
            raise RuntimeError("broker down")
        parsed = parse_message(
            raw,
            mailbox_address=MAILBOX,
            own_domains=["corp.example"],
            folder_role=role,
            channel_id=channel_id,
            now=now(),
        )
        item = Delivered(
            self.owner,
            folder,
            uid,
            role,
            parsed.idempotency_key,
            parsed.captured[0].direction if parsed.captured else None,
        )
        self.items.append(item)
        if self.log is not None:
            self.log.append(item)

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.items]


class MemoryLease:
    def __init__(self) -> None:
        self.holders: dict[str, tuple[str, float]] = {}

    async def acquire(self, channel_id: str, owner: str, ttl_s: float) -> bool:
        held = self.holders.get(channel_id)
        t = time.monotonic()
        if held is None or held[1] < t or held[0] == owner:
            self.holders[channel_id] = (owner, t + ttl_s)
            return True
        return False

    async def renew(self, channel_id: str, owner: str, ttl_s: float) -> bool:
        held = self.holders.get(channel_id)
        if held is None or held[0] != owner:
            return False
        self.holders[channel_id] = (owner, time.monotonic() + ttl_s)
        return True

    async def release(self, channel_id: str, owner: str) -> None:
        held = self.holders.get(channel_id)
        if held is not None and held[0] == owner:
            del self.holders[channel_id]


# ---- helpers --------------------------------------------------------------------------------


def mail(n: int, *, frm: str = "Client <client@client.ru>", to: str = MAILBOX) -> bytes:
    return (
        f"From: {frm}\r\nTo: {to}\r\nSubject: =?UTF-8?B?0JfQsNC/0YDQvtGB?= {n}\r\n"
        f"Message-ID: <msg-{n}@test.example>\r\nDate: Mon, 10 Nov 2025 10:00:00 +0300\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\nСообщение {n}\r\n"
    ).encode()


def sent_mail(n: int) -> bytes:
    return mail(n, frm=f"Sales <{MAILBOX}>", to="Client <client@client.ru>")


@pytest.fixture
def server() -> Iterator[DovecotServer]:
    with dovecot_server() as s:
        yield s


def make_poller(
    server: DovecotServer,
    cursors: MemoryCursors,
    sink: MemorySink,
    lease: MemoryLease | None = None,
    *,
    owner: str = "a",
    **config: object,
) -> ImapPoller:
    settings: dict[str, object] = {
        "poll_interval_s": 0.5,
        "connect_timeout_s": 5,
        "command_timeout_s": 10,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 1,
        **config,
    }
    cfg = ImapConfig(
        host=server.host,
        port=server.port,
        ssl="none",
        username=server.username,
        password=server.password,
        guard=UrlGuard(allow_private=True),  # Dovecot listens on 127.0.0.1
        **settings,  # type: ignore[arg-type]
    )
    return ImapPoller(
        CHANNEL,
        cfg,
        cursors=cursors,
        sink=sink,
        lease=lease or MemoryLease(),
        owner=owner,
        clock=now,
    )


async def eventually(predicate: Callable[[], bool], within: float = 8.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


# ---- tests ----------------------------------------------------------------------------------


async def test_inbox_and_sent_are_each_captured_once_without_marking_read(server):
    for n in (1, 2):
        append_message(server, "INBOX", mail(n))
    append_message(server, "Sent", sent_mail(3))
    cursors, sink = MemoryCursors(), MemorySink()
    poller = make_poller(server, cursors, sink)
    try:
        assert await poller.folders() == {"INBOX": "inbox", "Sent": "sent"}
        report = await poller.sync_once()
        assert report.delivered == 3
        assert sorted(sink.keys) == [f"imap:{CHANNEL}:<msg-{n}@test.example>" for n in (1, 2, 3)]
        by_key = {i.key: i for i in sink.items}
        assert by_key[f"imap:{CHANNEL}:<msg-3@test.example>"].direction == "out"
        assert by_key[f"imap:{CHANNEL}:<msg-1@test.example>"].direction == "in"
        assert [i.uid for i in sink.items if i.folder == "INBOX"] == [1, 2]  # UID order

        again = await poller.sync_once()
        assert again.delivered == 0
    finally:
        await poller.close()

    fresh = make_poller(server, cursors, sink)
    try:
        assert (await fresh.sync_once()).delivered == 0
    finally:
        await fresh.close()
    assert len(sink.items) == 3

    health = poller.health()
    assert health.last_success_at is not None and health.last_error is None
    assert health.folders["INBOX"].last_uid == 2 and health.folders["Sent"].last_uid == 1

    c = server.client()
    try:
        c.select_folder("INBOX", readonly=True)
        flags = c.get_flags(c.search("ALL"))
        assert all(b"\\Seen" not in f for f in flags.values())
    finally:
        c.logout()


async def test_first_sync_takes_mail_since_the_configured_date(server):
    append_message(server, "INBOX", mail(1), msg_time=datetime(2020, 3, 1, tzinfo=UTC))
    append_message(server, "INBOX", mail(2))
    cursors, sink = MemoryCursors(), MemorySink()
    poller = make_poller(server, cursors, sink, since=date(2024, 1, 1), folders=("INBOX",))
    try:
        await poller.sync_once()
        assert sink.keys == [f"imap:{CHANNEL}:<msg-2@test.example>"]
        # the old message is behind the cursor for good
        append_message(server, "INBOX", mail(3))
        await poller.sync_once()
        assert sink.keys[-1] == f"imap:{CHANNEL}:<msg-3@test.example>"
        assert len(sink.items) == 2
    finally:
        await poller.close()


async def test_uidvalidity_change_resyncs_with_the_same_idempotency_keys(server):
    for n in (1, 2):
        append_message(server, "INBOX", mail(n))
    cursors, sink = MemoryCursors(), MemorySink()
    poller = make_poller(server, cursors, sink, folders=("INBOX",))
    try:
        first = await poller.sync_once()
        assert first.folders[0].resynced  # no cursor yet
        keys_before = list(sink.keys)
        await poller.close()

        old, new = reset_uidvalidity(server, "INBOX")
        report = await poller.sync_once()
        assert report.folders[0].resynced and report.folders[0].uidvalidity == new != old
        assert report.delivered == 2
        assert sink.keys[2:] == keys_before  # delivered again, same keys: deduped downstream
        assert cursors.data[CHANNEL]["INBOX"] == (new, 2)
        assert (await poller.sync_once()).delivered == 0
    finally:
        await poller.close()


async def test_cursor_moves_per_batch_and_only_after_delivery(server):
    for n in range(1, 6):
        append_message(server, "INBOX", mail(n))
    cursors = MemoryCursors()
    failing = MemorySink(fail_on_uid=4)
    poller = make_poller(server, cursors, failing, folders=("INBOX",), batch_size=2)
    try:
        with pytest.raises(Exception, match="RuntimeError"):
            await poller.sync_once()
        assert [i.uid for i in failing.items] == [1, 2, 3]
        assert cursors.data[CHANNEL]["INBOX"][1] == 3  # up to the last handed-over message
        assert poller.health().last_error == "deliver: RuntimeError"
        assert poller.health().folders["INBOX"].pending == 2

        failing.fail_on_uid = None
        await poller.sync_once()
        assert [i.uid for i in failing.items] == [1, 2, 3, 4, 5]
        assert [s[2] for s in cursors.saves] == [2, 3, 5]
    finally:
        await poller.close()


async def test_message_appended_while_idle_is_delivered_within_seconds(server):
    append_message(server, "INBOX", mail(1))
    cursors, sink = MemoryCursors(), MemorySink()
    # long poll interval and one folder: only IDLE can bring the new mail in quickly
    poller = make_poller(server, cursors, sink, folders=("INBOX",), poll_interval_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        await eventually(lambda: len(sink.items) == 1)
        await eventually(lambda: poller.health().idle)
        started = time.monotonic()
        await asyncio.to_thread(append_message, server, "INBOX", mail(2))
        await eventually(lambda: len(sink.items) == 2, within=5)
        assert time.monotonic() - started < 5
        assert sink.keys[-1] == f"imap:{CHANNEL}:<msg-2@test.example>"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert not poller.health().leased


async def test_lease_keeps_a_second_poller_off_the_mailbox(server):
    append_message(server, "INBOX", mail(1))
    lease, cursors = MemoryLease(), MemoryCursors()
    shared: list[Delivered] = []
    sink_a, sink_b = MemorySink("a"), MemorySink("b")
    sink_a.log = sink_b.log = shared
    # a polls less often than its lease lives: it must renew while it sleeps
    a = make_poller(
        server, cursors, sink_a, lease, owner="a", folders=("INBOX",), idle=False,
        poll_interval_s=1.0, lease_ttl_s=0.6,
    )  # fmt: skip
    b = make_poller(
        server, cursors, sink_b, lease, owner="b", folders=("INBOX",), idle=False,
        poll_interval_s=0.2, lease_ttl_s=0.6,
    )  # fmt: skip
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    await eventually(lambda: len(shared) == 1)
    task_b = asyncio.create_task(b.run(stop_b))
    try:
        for n in (2, 3):
            await asyncio.to_thread(append_message, server, "INBOX", mail(n))
        await eventually(lambda: len(shared) == 3)
        await asyncio.sleep(1.5)  # b has tried many times, a's lease outlived its own ttl
        assert {i.owner for i in shared} == {"a"}
        assert sink_b.items == []
        assert a.health().leased and not b.health().leased

        # a stops and releases: b takes over from the shared cursor, no duplicates
        stop_a.set()
        await asyncio.wait_for(task_a, timeout=10)
        await asyncio.to_thread(append_message, server, "INBOX", mail(4))
        await eventually(lambda: len(shared) == 4)
        assert shared[-1].owner == "b"
        assert len({i.key for i in shared}) == 4
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(asyncio.gather(task_a, task_b), timeout=10)


async def test_errors_are_recorded_without_personal_data(server):
    cursors, sink = MemoryCursors(), MemorySink()
    wrong = make_poller(server, cursors, sink)
    wrong.config = replace(wrong.config, password="nope")
    with pytest.raises(Exception):  # noqa: B017 - imapclient's LoginError
        await wrong.sync_once()
    health = wrong.health()
    assert health.last_error == "auth: login failed"
    assert health.last_error_at is not None and health.last_success_at is None

    closed = make_poller(server, cursors, sink)
    closed.config = replace(closed.config, port=free_port())
    with pytest.raises(OSError):
        await closed.sync_once()
    assert closed.health().last_error == "network: ConnectionRefusedError"
    assert server.username not in (closed.health().last_error or "")


async def test_run_survives_a_server_outage_and_reports_health(server):
    append_message(server, "INBOX", mail(1))
    cursors, sink = MemoryCursors(), MemorySink()
    poller = make_poller(server, cursors, sink, folders=("INBOX",), idle=False)
    poller.config = replace(poller.config, port=free_port())
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        await eventually(lambda: poller.health().last_error is not None)
        assert (poller.health().last_error or "").startswith("network:")
        # the server "comes back" (right port): the back-off loop picks it up
        poller.config = replace(poller.config, port=server.port)
        await eventually(lambda: len(sink.items) == 1, within=10)
        assert poller.health().last_success_at is not None
        assert folder_status(server, "INBOX")[b"MESSAGES"] == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_non_ascii_sent_folder_is_synced_as_outbound(server):
    append_message(server, "Отправленные", sent_mail(7))
    cursors, sink = MemoryCursors(), MemorySink()
    poller = make_poller(server, cursors, sink, folders=("INBOX", "Отправленные"))
    try:
        assert await poller.folders() == {"INBOX": "inbox", "Отправленные": "sent"}
        assert (await poller.sync_once()).delivered == 1
        assert sink.items[0].folder == "Отправленные"
        assert sink.items[0].role == "sent" and sink.items[0].direction == "out"
        assert cursors.data[CHANNEL]["Отправленные"][1] == 1
    finally:
        await poller.close()


@pytest.fixture
def tls_server() -> Iterator[DovecotServer]:
    with dovecot_server(tls=True) as s:
        yield s


@pytest.mark.parametrize("mode", ["tls", "starttls"])
async def test_tls_and_starttls_connections_sync(tls_server, mode):
    append_message(tls_server, "INBOX", mail(1))
    assert tls_server.tls_port is not None and tls_server.ca_file is not None
    context = ssl.create_default_context(cafile=str(tls_server.ca_file))
    cursors, sink = MemoryCursors(), MemorySink()
    poller = make_poller(tls_server, cursors, sink, folders=("INBOX",))
    port = tls_server.tls_port if mode == "tls" else tls_server.port
    poller.config = replace(poller.config, ssl=mode, port=port, ssl_context=context)
    try:
        assert (await poller.sync_once()).delivered == 1
    finally:
        await poller.close()


async def test_untrusted_certificate_is_refused(tls_server):
    cursors, sink = MemoryCursors(), MemorySink()
    poller = make_poller(tls_server, cursors, sink)
    poller.config = replace(poller.config, ssl="tls", port=tls_server.tls_port)
    with pytest.raises(ssl.SSLCertVerificationError):
        await poller.sync_once()
    assert poller.health().last_error == "network: SSLCertVerificationError"


async def test_other_folders_are_polled_while_idling_on_inbox(server):
    cursors, sink = MemoryCursors(), MemorySink()
    poller = make_poller(server, cursors, sink, poll_interval_s=0.5)  # INBOX + Sent
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        await eventually(lambda: poller.health().idle)
        await asyncio.to_thread(append_message, server, "Sent", sent_mail(5))
        await eventually(lambda: len(sink.items) == 1, within=5)
        assert sink.items[0].folder == "Sent" and sink.items[0].direction == "out"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_a_poller_that_loses_its_lease_stops_delivering(server):
    lease, cursors, sink = MemoryLease(), MemoryCursors(), MemorySink()
    poller = make_poller(server, cursors, sink, lease, folders=("INBOX",), idle=False, lease_ttl_s=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        await eventually(lambda: poller.health().leased)
        lease.holders[CHANNEL] = ("someone-else", time.monotonic() + 60)  # taken over
        await eventually(lambda: not poller.health().leased, within=3)
        await asyncio.to_thread(append_message, server, "INBOX", mail(9))
        await asyncio.sleep(1.5)
        assert sink.items == []
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert lease.holders[CHANNEL][0] == "someone-else"  # release never frees another's lease
