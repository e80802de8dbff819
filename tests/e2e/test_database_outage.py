"""The database goes away while hooks stream in, and comes back: hooks answered 2xx land once on
a card, hooks the hub could not check are told to retry (503), and no event is dead-lettered
because the outage outlasted its retries: events wait for the database instead."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aio_pika
import httpx
import pytest

from shared.localmongo import LocalMongo
from tests.support.hub import Api, HubProcess, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _post_quick(client: httpx.Client, url: str, i: int) -> httpx.Response | None:
    """A post while the database is down: answered 2xx (channel from cache), 503, or not within
    1 s (the hub waits for the database, the provider would retry): never a 500."""
    try:
        return client.post(url, data={"name": f"Сбой {i}", "phone": f"+7917{i:07d}"}, timeout=1)
    except httpx.TimeoutException:
        return None


def dead_letters(rabbit: str, namespace: str) -> int:
    async def count() -> int:
        conn = await aio_pika.connect(rabbit)
        async with conn:
            ch = await conn.channel()
            queue = await ch.declare_queue(f"{namespace}.dead-letters", passive=True)
            return int(queue.declaration_result.message_count or 0)

    return asyncio.run(count())


def test_hooks_accepted_around_a_database_outage_land_once_and_nothing_is_dead_lettered(
    rabbit: str, tmp_path: Path
) -> None:
    db = LocalMongo(tmp_path / "db", log_path=tmp_path / "db.log").start()
    port = db.port
    servers = [db]
    try:
        hub = HubProcess(
            rabbit_url=rabbit, mongo_url=db.url, data_dir=tmp_path / "hub", env={"CRM_RETRY_LIMIT": "1"}
        )
        with hub.serving():
            root = Api(hub.url, hub.root_token)
            admin = root.as_key(root.post("/api/v1/tenants", json={"name": "Outage"}).json()["api_key"])
            channel = admin.post(
                "/api/v1/channels", json={"kind": "form", "name": "f", "intake": "auto"}
            ).json()
            accepted: list[int] = []
            refused: list[int] = []

            # The outage, from the main thread (a server started from a thread that ends would get
            # its parent-death signal at once): down 1.5 s into the stream for 8 s, longer than
            # every retry of an event together (CRM_RETRY_LIMIT=1), then up again on its data.
            began = time.monotonic()
            down_at, up_at, end_at = began + 1.5, began + 13.5, began + 15.0
            state = "up"
            with httpx.Client(timeout=30) as client:
                i = 0
                while time.monotonic() < end_at:
                    now = time.monotonic()
                    if state == "up" and now >= down_at:
                        db.stop()
                        state = "down"
                    elif state == "down" and now >= up_at:
                        servers.append(
                            LocalMongo(db.storage, port=port, log_path=tmp_path / "db.log").start()
                        )
                        state = "back"
                    i += 1
                    r = (
                        client.post(
                            channel["webhook_url"],
                            data={"name": f"Сбой {i}", "phone": f"+7917{i:07d}"},
                            timeout=3,
                        )
                        if state != "down"
                        else _post_quick(client, channel["webhook_url"], i)
                    )
                    if r is None or r.status_code != 200:
                        assert r is None or r.status_code == 503, r.text
                        refused.append(i)
                    else:
                        accepted.append(i)
                    time.sleep(0.01)
            assert state == "back"
            assert accepted, "hooks must be accepted around the outage"
            want = {f"+7917{i:07d}" for i in accepted}

            def landed() -> set[str] | None:
                phones: set[str] = set()
                cursor = None
                while True:
                    params: dict[str, object] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
                    r = admin.get("/api/v1/contacts", params=params)
                    if r.status_code != 200:
                        return None  # still reconnecting
                    page = r.json()
                    phones |= {p for c in page["items"] for p in c["phones"]}
                    cursor = page["next_cursor"]
                    if not cursor:
                        return phones if phones >= want else None

            phones = eventually(landed, timeout=120, interval=1.0)
            assert phones <= {f"+7917{i:07d}" for i in accepted + refused}
            assert dead_letters(rabbit, hub.namespace) == 0
    finally:
        for server in servers:
            server.stop()
