"""The IMAP poller's MongoDB storage: the mailbox lease and the per-folder cursors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.connectors.mail.ingest import MongoCursorStore, MongoLease, health_fields
from services.connectors.mail.poller import FolderHealth, PollerHealth
from shared.clock import FrozenClock
from shared.mongo import mongo_client

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(mongo_url: str) -> AsyncIterator[Any]:
    client = mongo_client(mongo_url)
    name = f"imapstore_{uuid.uuid4().hex[:8]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


async def test_lease_has_one_holder_until_it_expires_or_is_released(db: Any) -> None:
    clock = FrozenClock(T0)
    lease = MongoLease(db, clock)
    assert await lease.acquire("ch1", "a", 60)
    assert await lease.acquire("ch1", "a", 60)  # its own: re-acquire is fine
    assert not await lease.acquire("ch1", "b", 60)
    assert not await lease.renew("ch1", "b", 60)
    assert await lease.acquire("ch2", "b", 60)  # another mailbox is independent

    clock.advance(59)
    assert await lease.renew("ch1", "a", 60)
    clock.advance(59)
    assert not await lease.acquire("ch1", "b", 60)  # renewed: still a's

    clock.advance(2)  # expired
    assert await lease.acquire("ch1", "b", 60)
    assert not await lease.renew("ch1", "a", 60)

    await lease.release("ch1", "a")  # not a's any more: no effect
    assert not await lease.acquire("ch1", "c", 60)
    await lease.release("ch1", "b")
    assert await lease.acquire("ch1", "c", 60)


async def test_concurrent_acquires_of_a_free_lease_have_one_winner(db: Any) -> None:
    lease = MongoLease(db, FrozenClock(T0))
    results = await asyncio.gather(*(lease.acquire("ch", f"owner-{i}", 60) for i in range(8)))
    assert sorted(results) == [False] * 7 + [True]


async def test_cursor_never_moves_back_within_a_uidvalidity(db: Any) -> None:
    cursors = MongoCursorStore(db, FrozenClock(T0))
    assert await cursors.load("ch") == {}
    await cursors.save("ch", "INBOX", 100, 5)
    await cursors.save("ch", "INBOX.Отправленные", 7, 2)
    await cursors.save("other", "INBOX", 1, 99)
    await cursors.save("ch", "INBOX", 100, 3)  # a late save from a poller that lost its lease
    assert await cursors.load("ch") == {"INBOX": (100, 5), "INBOX.Отправленные": (7, 2)}

    await cursors.save("ch", "INBOX", 100, 9)
    assert (await cursors.load("ch"))["INBOX"] == (100, 9)
    await cursors.save("ch", "INBOX", 200, 1)  # UIDVALIDITY changed: replaced, even if lower
    assert (await cursors.load("ch"))["INBOX"] == (200, 1)


async def test_health_cursor_keeps_folder_names_with_dots(db: Any) -> None:
    h = PollerHealth(
        last_success_at=T0,
        last_error_at=None,
        last_error=None,
        folders={
            "INBOX": FolderHealth("inbox", 10, 4),
            "INBOX.Отправленные": FolderHealth("sent", 11, 2, pending=1),
        },
        lag_s=1.234,
        leased=True,
        idle=True,
        delivered_total=6,
    )
    await db.channels.insert_one({"_id": "ch", "health": {"received": 3}})
    await db.channels.update_one({"_id": "ch"}, {"$set": health_fields(h, T0)})
    doc = await db.channels.find_one({"_id": "ch"})
    health = doc["health"]
    assert health["received"] == 3
    assert health["cursor"]["INBOX.Отправленные"] == {
        "role": "sent",
        "uidvalidity": 11,
        "last_uid": 2,
        "pending": 1,
    }
    assert health["cursor"]["INBOX"]["last_uid"] == 4
    assert health["state"] == "ok"
    assert health["lag_s"] == 1.2
    assert "last_error" not in health
