"""Benchmark of the contacts service at scale (not a test; pytest does not collect it).

    python -m tests.perf.bench [--contacts 100000] [--captures 1000] [--reads 500] [--concurrency 8]

What it measures, against a real MongoDB-protocol server (``CRM_MONGO_URL``, else a local
SecantusDB it starts in memory) with the real service code:

- seeding: the service's indexes, then N contacts (each with a timeline item) written in bulk;
- capture → timeline: ``interaction.captured`` envelopes handed to the service's own consumer
  (the contacts service's ``interaction.captured`` handler: identity resolution, timeline upsert, outbox, processed
  marker, all in one transaction), half from known people (phone or email in any spelling), half
  from new ones; sequential and with ``--concurrency`` handlers at once, as the broker's prefetch
  would run them;
- contact-card read: ``get_contact`` + the first timeline page of random contacts (latency
  percentiles), and a phone search.

The broker is not involved (the numbers are the service's own cost); publishing after commit is
switched off, events stay in the outbox collection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient

from services.contacts.domain.cards import name_key, search_words
from services.contacts.service import ContactsService
from shared.bus import Bus, EventPublisher, Topology
from shared.clock import SystemClock, new_id
from shared.crypto import SecretBox
from shared.events import Envelope, InteractionCaptured, SenderData, make_event
from shared.localmongo import LocalMongo
from shared.service import Runtime
from shared.settings import Settings

FIRST = ["Иван", "Пётр", "Анна", "Мария", "Олег", "John", "Anna", "Peter", "Ольга", "Сергей"]
LAST = ["Петров", "Иванова", "Сидоров", "Smith", "Кузнецова", "Попов", "Brown", "Волков", "Соколова"]
TENANT = "bench-tenant"


def phone_of(i: int) -> str:
    return f"+7916{i:07d}"


def email_of(i: int) -> str:
    return f"client{i}@example.ru"


def contact_doc(i: int, now: datetime) -> dict[str, Any]:
    name = f"{FIRST[i % len(FIRST)]} {LAST[(i // 7) % len(LAST)]}"
    phones, emails = [phone_of(i)], [email_of(i)]
    at = now - timedelta(minutes=i)
    return {
        "_id": f"c{i:08d}",
        "tenant_id": TENANT,
        "name": name,
        "phones": phones,
        "emails": emails,
        "company_id": None,
        "owner_id": None,
        "tags": [],
        "custom": {},
        "source": {"channel_id": "seed", "kind": "form"},
        "state": "active",
        "search": search_words(name, phones, emails),
        "name_key": name_key(name),
        "created_at": at,
        "updated_at": at,
        "last_activity_at": at,
    }


def timeline_doc(i: int, now: datetime) -> dict[str, Any]:
    return {
        "_id": f"i{i:08d}",
        "tenant_id": TENANT,
        "contact_id": f"c{i:08d}",
        "kind": "form",
        "direction": "in",
        "occurred_at": now - timedelta(minutes=i),
        "channel_id": "seed",
        "summary": "Form submission",
        "data": {"fields": {"comment": "seed"}},
        "subject_key": f"seed:{i}",
        "event_keys": [f"seed:{i}"],
    }


def spelled(e164: str, n: int) -> str:
    """The same phone as people write it."""
    digits = e164[2:]
    return [
        f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}",
        f"+7 {digits[:3]} {digits[3:6]} {digits[6:8]} {digits[8:]}",
        "7" + digits,
    ][n % 3]


def capture_event(n: int, known: int, seeded: int) -> Envelope:
    """Even n: a known person (phone, or email in upper case); odd n: a new one."""
    from shared.normalize import normalize_email, normalize_phone

    if n % 2 == 0:
        i = random.randrange(known)
        if n % 4 == 0:
            sender = SenderData(phones=[normalize_phone(spelled(phone_of(i), n)).e164 or ""])
        else:
            sender = SenderData(emails=[normalize_email(email_of(i).upper()) or ""])
    else:
        sender = SenderData(name="Новый Клиент", phones=[phone_of(seeded + n)])
    payload = InteractionCaptured(
        channel_id="bench",
        channel_kind="form",
        intake="auto",
        kind="form",
        direction="in",
        occurred_at=datetime.now(UTC),
        sender=sender,
        summary="Form submission",
        data={"fields": {"n": str(n)}},
    )
    return make_event(
        "interaction.captured",
        tenant_id=TENANT,
        producer="bench",
        payload=payload,
        idempotency_key=f"bench:{uuid.uuid4().hex}",
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    server = None
    url = os.environ.get("CRM_MONGO_URL")
    if not url:
        server = LocalMongo(":memory:", log_path=Path(tempfile.mkdtemp()) / "secantus.log").start()
        url = server.url
    ns = f"bench{uuid.uuid4().hex[:6]}"
    settings = Settings(namespace=ns, mongo_url=url)
    topology = Topology(ns)
    bus = Bus(settings.rabbit_url, topology)  # never connected: nothing is published
    rt = Runtime(
        settings=settings,
        bus=bus,
        topology=topology,
        mongo=AsyncMongoClient(url, tz_aware=True, uuidRepresentation="standard", socketTimeoutMS=None),
        publisher=EventPublisher(bus),
        clock=SystemClock(),
        secrets=SecretBox(Fernet.generate_key()),
    )
    svc = ContactsService(rt)
    svc.store.publish = None  # events stay in the outbox
    db = svc.db
    on_captured = svc.events.handlers["interaction.captured.v1"]

    async def rpc(method: str, ctx: dict[str, Any], args: dict[str, Any]) -> Any:
        reply = await svc.rpc.dispatch({"method": method, "ctx": ctx, "args": args})
        return reply["result"]

    out: dict[str, Any] = {
        "contacts": args.contacts,
        "server": "MongoDB at CRM_MONGO_URL" if server is None else "SecantusDB (local)",
    }
    try:
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        await svc.prepare()  # the service's indexes first: they are kept up as contacts arrive
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = 2000
        for start in range(0, args.contacts, batch):
            stop = min(args.contacts, start + batch)
            await db.contacts.insert_many([contact_doc(i, now) for i in range(start, stop)], ordered=False)
            await db.timeline.insert_many([timeline_doc(i, now) for i in range(start, stop)], ordered=False)
            if stop % 20_000 == 0:
                print(f"  seeded {stop}", flush=True)
        seed_s = time.perf_counter() - t0
        out["seed_s"] = round(seed_s, 1)
        print(
            f"seeded {args.contacts} contacts + timeline items in {seed_s:.1f}s (indexes {index_s:.1f}s)",
            flush=True,
        )

        # capture → timeline, one at a time
        events = [capture_event(n, args.contacts, args.contacts) for n in range(args.captures)]
        t0 = time.perf_counter()
        lat: list[float] = []
        for env in events:
            s = time.perf_counter()
            await on_captured(env)
            lat.append((time.perf_counter() - s) * 1000)
        seq_s = time.perf_counter() - t0
        out["capture_sequential_per_s"] = round(len(events) / seq_s, 1)
        out["capture_p50_ms"] = round(pct(lat, 50), 2)
        out["capture_p95_ms"] = round(pct(lat, 95), 2)

        # with concurrency, as the broker's prefetch runs handlers
        events = [
            capture_event(n, args.contacts, args.contacts + args.captures) for n in range(args.captures)
        ]
        queue: asyncio.Queue[Envelope] = asyncio.Queue()
        for env in events:
            queue.put_nowait(env)

        async def worker() -> None:
            while not queue.empty():
                await on_captured(queue.get_nowait())

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        conc_s = time.perf_counter() - t0
        out["capture_concurrent_per_s"] = round(len(events) / conc_s, 1)
        out["concurrency"] = args.concurrency
        items = await db.timeline.count_documents({"tenant_id": TENANT, "channel_id": "bench"})
        assert items == 2 * args.captures, f"{items} timeline items for {2 * args.captures} captures"

        # contact-card read: the card + its first timeline page
        ctx = {"tenant_id": TENANT, "user_id": "u", "role": "admin", "settings": {"default_region": "RU"}}
        card: list[float] = []
        for _ in range(args.reads):
            cid = f"c{random.randrange(args.contacts):08d}"
            s = time.perf_counter()
            await rpc("get_contact", ctx, {"contact_id": cid})
            page = await rpc("timeline", ctx, {"contact_id": cid, "limit": 50})
            card.append((time.perf_counter() - s) * 1000)
            assert page["items"], cid
        out["card_read_p50_ms"] = round(pct(card, 50), 2)
        out["card_read_p95_ms"] = round(pct(card, 95), 2)
        out["card_read_p99_ms"] = round(pct(card, 99), 2)
        out["card_read_mean_ms"] = round(statistics.fmean(card), 2)

        search: list[float] = []
        for n in range(min(args.reads, 200)):
            i = random.randrange(args.contacts)
            s = time.perf_counter()
            res = await rpc(
                "list_contacts", ctx, {"filters": {"phone": spelled(phone_of(i), n)}, "limit": 50}
            )
            search.append((time.perf_counter() - s) * 1000)
            assert res["items"], i
        out["phone_search_p50_ms"] = round(pct(search, 50), 2)
        out["phone_search_p95_ms"] = round(pct(search, 95), 2)
        return out
    finally:
        try:
            if server is None:
                await rt.mongo.drop_database(db.name)
            await rt.mongo.close()
        finally:
            if server is not None:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--captures", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    random.seed(args.seed)
    _ = new_id  # ids of captured contacts come from the service itself
    result = asyncio.run(bench(args))
    print()
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
