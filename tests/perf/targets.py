"""The messaging core's speed targets, measured on the whole hub beside this machine's ceilings.

    python -m tests.perf.targets [--contacts 100000] [--burst-s 10] [--offered 200] [--paced-s 15]

One run, on one machine, in this order:

1. **Ceilings** of the parts the hub is built on, measured now so the hub's figures can be read as
   a share of what the machine gives: a bare uvicorn app (same HTTP stack as the gateway) under the
   same load client, aio-pika persistent publishes with confirms to a durable queue, and the
   database's bulk insert rate (``insert_many`` of 500).
2. **The hub** (``crm run all``: the gateway+ingress process and the workers process) on a fresh
   namespace and an in-memory SecantusDB, with ``--contacts`` existing contacts (each with a
   timeline item) seeded in bulk into the contacts database.
3. **Burst**: ``--burst-s`` seconds of form hooks of new people from 50 connections (wrk). Measured: hooks accepted
   per second (2xx, durable), captures per second end to end (first post until the last timeline
   item is written: hook → contact resolved → on the timeline), the contact card's p99 (card +
   first timeline page of seeded contacts, read all along) and the hub's peak RSS (every process
   of the hub, not the database server).
4. **Offered load**: hooks at ``--offered`` per second for ``--paced-s`` seconds (open loop); the
   p99 of hook → timeline, from each hook's send time to its timeline item's ``created_at``.

The figures are printed beside the targets and the ceilings; nothing here asserts (speed goals are
checked by reading this output, never by a timed test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from pymongo import AsyncMongoClient

from shared.clock import first_id_at
from shared.localmongo import LocalMongo, free_port
from tests.perf.bench import contact_doc, timeline_doc
from tests.support.hub import HubProcess
from tests.support.servers import delete_namespace_queues, rabbit_url

CONNECTIONS = 50
BARE_APP = "tests.perf.bare_app:app"
ROOT = Path(__file__).resolve().parents[2]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def closed_loop(
    n: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """``n`` calls of ``one`` with ``concurrency`` in flight: (seconds, latencies in seconds)."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def client(base: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    return httpx.AsyncClient(base_url=base, timeout=60, limits=limits)


# ---- ceilings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    answers: int
    seconds: float
    failed: int
    p50_ms: float
    p99_ms: float

    @property
    def per_s(self) -> float:
        return self.answers / self.seconds


async def wrk_burst(url: str, seconds: float, offset: int = 0) -> Burst:
    """Form posts from ``CONNECTIONS`` connections for ``seconds`` by wrk (a C load client, so the
    client is not what is measured); every post a new person (``phone``/``ref`` from ``offset``)."""
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds:.0f}s",
        "--timeout",
        "30s",
        "-s",
        str(ROOT / "tests/perf/hooks.lua"),
        url,
        env={**os.environ, "WRK_OFFSET": str(offset)},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    line = next(x for x in stdout.decode().splitlines() if x.startswith("WRK "))
    answers, duration_us, failed, p50, p99 = (int(x) for x in line.split()[1:])
    return Burst(answers, duration_us / 1e6, failed, p50 / 1000, p99 / 1000)


async def bare_uvicorn_ceiling(seconds: float) -> float:
    """Requests/s a do-nothing ASGI app answers to the same load (uvicorn as the gateway runs it)."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", BARE_APP, "--port", str(port), "--log-level", "warning", cwd=ROOT
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    await http.get(f"http://127.0.0.1:{port}/")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        burst = await wrk_burst(f"http://127.0.0.1:{port}/hooks/x", seconds)
    finally:
        proc.terminate()
        await proc.wait()
    return burst.per_s


async def publish_ceiling(url: str, namespace: str, n: int) -> float:
    """Persistent messages/s aio-pika publishes with confirms to a durable classic queue."""
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"{namespace}.ceiling", durable=True)
        body = b"x" * 700  # about one hook.received envelope

        async def one(i: int) -> None:
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue.name,
            )

        seconds, _ = await closed_loop(n, CONNECTIONS, one)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return n / seconds


async def bulk_insert_ceiling(mongo: AsyncMongoClient[Any], n: int = 10_000) -> float:
    """Documents/s of ``insert_many`` in batches of 500 (timeline-sized documents)."""
    coll = mongo["perf_ceiling"]["docs"]
    now = datetime.now(UTC)
    start = time.perf_counter()
    for base in range(0, n, 500):
        await coll.insert_many([timeline_doc(i, now) for i in range(base, base + 500)])
    seconds = time.perf_counter() - start
    await mongo.drop_database("perf_ceiling")
    return n / seconds


# ---- the hub ---------------------------------------------------------------------------------


@dataclass
class Sampler:
    """Peak RSS of a process tree and card-read latencies, sampled while the load runs."""

    root_pid: int
    peak_rss_mb: float = 0.0
    card_ms: list[float] = field(default_factory=list)

    def rss_mb(self) -> float:
        total_kb = 0
        for pid in self.tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total_kb += next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
        return total_kb / 1024

    def cpu_s(self, extra: dict[str, int]) -> dict[str, float]:
        """CPU seconds (user + system) so far of each process of the tree, named by its role
        (``crm run <what>``), and of ``extra`` processes (the database server)."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        pids = {pid: name for name, pid in extra.items()}
        for pid in self.tree():
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            words = [w.decode(errors="replace") for w in cmd if w]
            role = words[words.index("run") + 1] if "run" in words else Path(words[0]).name
            pids[pid] = "supervisor" if role == "all" and pid == self.root_pid else role
        for pid, name in pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return out

    def tree(self) -> list[int]:
        out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
        rows = [tuple(int(x) for x in line.split()) for line in out.splitlines() if line.strip()]
        pids = [self.root_pid]
        for pid in pids:
            pids += [child for child, ppid in rows if ppid == pid and child not in pids]
        return pids

    async def watch_rss(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, await asyncio.to_thread(self.rss_mb))
            await asyncio.sleep(0.5)

    async def read_cards(
        self, http: httpx.AsyncClient, auth: dict[str, str], seeded: int, stop: asyncio.Event
    ) -> None:
        """A manager opening cards all along: card + first timeline page, ~10 a second."""
        while not stop.is_set():
            cid = f"c{random.randrange(seeded):08d}"
            t = time.perf_counter()
            card = await http.get(f"/api/v1/contacts/{cid}", headers=auth)
            page = await http.get(f"/api/v1/contacts/{cid}/timeline", params={"limit": 50}, headers=auth)
            self.card_ms.append((time.perf_counter() - t) * 1000)
            assert card.status_code == 200 and page.status_code == 200, (card.text, page.text)
            await asyncio.sleep(0.1)


async def seed(mongo: AsyncMongoClient[Any], db_name: str, tenant_id: str, n: int) -> float:
    db = mongo[db_name]
    now = datetime.now(UTC)
    start = time.perf_counter()
    for base in range(0, n, 2000):
        stop = min(n, base + 2000)
        contacts = [contact_doc(i, now) | {"tenant_id": tenant_id} for i in range(base, stop)]
        # ids below every ``new_id`` (``0-`` sorts before ``01``), so the items the run writes
        # are found by an ``_id`` range alone (:class:`Landed`)
        items = [
            timeline_doc(i, now) | {"tenant_id": tenant_id, "_id": f"0-seed-{i:08d}"}
            for i in range(base, stop)
        ]
        await db.contacts.insert_many(contacts, ordered=False)
        await db.timeline.insert_many(items, ordered=False)
        if stop % 20_000 == 0:
            print(f"  seeded {stop}", flush=True)
    return time.perf_counter() - start


class Landed:
    """The bench channel's timeline items written since the run began, read by ``_id`` (ids grow
    with time): each poll reads only the last seconds through the ``_id`` index. A count with a
    filter would scan the 100,000 seeded items on every poll and the bench would measure itself."""

    WINDOW_S = 10.0
    """An item's id is made before its transaction commits: re-read this far back."""

    def __init__(self, timeline: Any, channel_id: str) -> None:
        self.timeline = timeline
        self.channel_id = channel_id
        self.items: dict[str, dict[str, Any]] = {}
        self.began = time.time()

    async def poll(self) -> int:
        after = first_id_at(max(self.began, time.time() - self.WINDOW_S) - 1)
        async for doc in self.timeline.find(
            {"_id": {"$gt": after}}, {"created_at": 1, "channel_id": 1, "data.fields.ref": 1}
        ):
            if doc.get("channel_id") == self.channel_id:
                self.items[doc["_id"]] = doc
        return len(self.items)

    def last_written(self) -> datetime | None:
        return max((d["created_at"] for d in self.items.values()), default=None)

    async def wait_for(self, expected: int, limit_s: float) -> int:
        """Poll until ``expected`` items landed (or ``limit_s`` passed)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if await self.poll() >= expected:
                break
            await asyncio.sleep(1)
        return len(self.items)

    async def settle(self) -> int:
        """Poll until the count has not grown for 3 s."""
        count = await self.poll()
        while True:
            await asyncio.sleep(3)
            if (now := await self.poll()) == count:
                return count
            count = now


async def hub_run(
    args: argparse.Namespace, hub: HubProcess, mongo: AsyncMongoClient[Any], extra: dict[str, int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with client(hub.url) as http:
        root = {"Authorization": f"Bearer {hub.root_token}"}
        tenant = (await http.post("/api/v1/tenants", json={"name": "bench"}, headers=root)).json()
        auth = {"Authorization": f"Bearer {tenant['api_key']}"}
        channel = (
            await http.post(
                "/api/v1/channels", json={"kind": "form", "name": "bench", "intake": "auto"}, headers=auth
            )
        ).json()
        hook = channel["webhook_url"]
        out["seed_s"] = round(
            await seed(mongo, f"{hub.namespace}_contacts", tenant["tenant_id"], args.contacts), 1
        )
        timeline = mongo[f"{hub.namespace}_contacts"].timeline
        assert hub.proc is not None
        sampler = Sampler(hub.proc.pid)
        stop = asyncio.Event()
        watchers = [asyncio.create_task(sampler.watch_rss(stop))]
        if not args.db_profile:  # card reads would mix their queries into the hooks' own
            watchers.append(asyncio.create_task(sampler.read_cards(http, auth, args.contacts, stop)))

        began = datetime.now(UTC)
        landed_items = Landed(timeline, channel["id"])
        cpu_before = sampler.cpu_s(extra)
        ops_before = (await mongo.admin.command("serverStatus"))["opcounters"]
        burst = await wrk_burst(hook, args.burst_s)
        out["accepted_per_s"] = burst.per_s
        out["accept_p50_ms"] = burst.p50_ms
        out["accept_p99_ms"] = burst.p99_ms
        out["accept_failed"] = burst.failed
        out["burst_hooks"] = burst.answers
        # wrk may leave a few posts in flight when it stops: wait for what was answered, then
        # until the count stands still, and take the rate of what landed
        await landed_items.wait_for(burst.answers - burst.failed, args.wait_s)
        count, last = await landed_items.settle(), landed_items.last_written()
        if count < burst.answers - burst.failed or last is None:
            out["captured_per_s"] = float("nan")
            out["captured_in_time"] = f"{count} of {burst.answers} in {args.wait_s:.0f} s"
        else:
            out["captured_per_s"] = count / (last - began).total_seconds()
        landed = count
        cpu_after = sampler.cpu_s(extra)
        ops_after = (await mongo.admin.command("serverStatus"))["opcounters"]
        for op, n in ops_after.items():
            # database operations one hook costs, all services together (the bench's own polls
            # of the timeline count in "command"/"query": a few per second)
            out[f"db_{op}_per_hook"] = (n - ops_before.get(op, 0)) / max(1, count)
        for name, spent in cpu_after.items():
            # what one hook costs each process, from the accept to its timeline item and events
            out[f"cpu_ms_per_hook_{name}"] = (spent - cpu_before.get(name, 0.0)) * 1000 / max(1, count)
        out["card_p99_ms"] = pct(sampler.card_ms, 99)
        out["card_reads"] = len(sampler.card_ms)

        # open loop at the offered rate
        sent_at: dict[str, float] = {}
        total = int(args.offered * args.paced_s)
        base = 1_000_000
        epoch = time.time()

        async def paced(i: int) -> None:
            ref = f"p{i}"
            sent_at[ref] = time.time()
            r = await http.post(
                hook, data={"name": f"Клиент {base + i}", "phone": f"+7915{base + i:07d}", "ref": ref}
            )
            assert r.status_code == 200, r.text

        tasks = []
        for i in range(total):
            delay = epoch + i / args.offered - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(paced(i)))
        await asyncio.gather(*tasks)
        await landed_items.wait_for(landed + total, args.wait_s)
        lag: list[float] = []
        for item in landed_items.items.values():
            ref = ((item.get("data") or {}).get("fields") or {}).get("ref")
            if ref in sent_at:
                lag.append(item["created_at"].timestamp() - sent_at[ref])
        out["offered_per_s"] = args.offered
        out["hook_to_timeline_p50_ms"] = pct(lag, 50) * 1000
        out["hook_to_timeline_p99_ms"] = pct(lag, 99) * 1000 if len(lag) == total else float("nan")
        out["paced_on_timeline"] = f"{len(lag)} of {total}"
        out["hooks_in_all"] = landed + len(lag)
        stop.set()
        await asyncio.gather(*watchers)
        out["hub_peak_rss_mb"] = sampler.peak_rss_mb
    return out


def db_profile(directory: Path, namespace: str, hooks: int) -> list[tuple[str, float]]:
    """The counts ``CRM_DB_PROFILE`` left (``shared/dbprofile.py``), summed and divided by hooks."""
    total: dict[str, int] = {}
    for path in directory.glob("db-*.json"):
        for key, n in json.loads(path.read_text()).items():
            key = key.removeprefix(f"{namespace}_")
            total[key] = total.get(key, 0) + n
    ranked = sorted(total.items(), key=lambda kv: -kv[1])
    return [(key, n / max(1, hooks)) for key, n in ranked if n / max(1, hooks) >= 0.05]


def server_pid(server: LocalMongo) -> int:
    assert server.proc is not None
    return server.proc.pid


# ---- the report --------------------------------------------------------------------------------

TARGETS = (
    # figure, target, comparison, ceiling it is a share of
    ("accepted_per_s", 1000, ">=", "bare_uvicorn_per_s"),
    ("captured_per_s", 300, ">=", "bulk_insert_docs_per_s"),
    ("hook_to_timeline_p99_ms", 2000, "<=", None),
    ("hub_peak_rss_mb", 500, "<=", None),
    ("card_p99_ms", 50, "<=", None),
)


def report(result: dict[str, Any]) -> str:
    lines = ["", f"{'figure':<24} {'measured':>10} {'target':>9} {'met':>4}   ceiling (ratio)"]
    for name, target, cmp, ceiling in TARGETS:
        value = float(result.get(name, float("nan")))
        met = value >= target if cmp == ">=" else value <= target
        extra = ""
        if ceiling:
            top = float(result[ceiling])
            extra = f"{ceiling} {top:,.0f} ({value / top:.1%})"
        lines.append(f"{name:<24} {value:>10.1f} {cmp}{target:>7} {'yes' if met else 'no':>4}   {extra}")
    publish = float(result["publish_confirm_per_s"])
    lines.append(
        f"{'accepted vs publish':<24} {result['accepted_per_s']:>10.1f} {'':>9} {'':>4}   "
        f"publish_confirm_per_s {publish:,.0f} ({result['accepted_per_s'] / publish:.1%})"
    )
    lines.append("")
    lines += [f"{k:<24} {v:.1f}" if isinstance(v, float) else f"{k:<24} {v}" for k, v in result.items()]
    return "\n".join(lines)


async def ceilings(
    args: argparse.Namespace, rabbit: str, namespace: str, mongo: AsyncMongoClient[Any]
) -> dict[str, float]:
    return {
        "bare_uvicorn_per_s": await bare_uvicorn_ceiling(5),
        "publish_confirm_per_s": await publish_ceiling(rabbit, namespace, args.ceiling_n),
        "bulk_insert_docs_per_s": await bulk_insert_ceiling(mongo),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--burst-s", type=float, default=10, help="seconds of hooks from 50 connections")
    parser.add_argument("--offered", type=float, default=200)
    parser.add_argument("--paced-s", type=float, default=15)
    parser.add_argument("--wait-s", type=float, default=300, help="longest wait for the timeline")
    parser.add_argument("--ceiling-n", type=int, default=5000)
    parser.add_argument("--one-process", action="store_true", help="crm run all --one-process")
    parser.add_argument(
        "--db-profile", action="store_true", help="count the hub's database commands per hook (no card reads)"
    )
    args = parser.parse_args()
    random.seed(7)
    rabbit = rabbit_url()
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalMongo(":memory:", log_path=Path(tmp) / "mongo.log").start()
        hub = HubProcess(
            rabbit_url=rabbit,
            mongo_url=server.url,
            data_dir=Path(tmp) / "hub",
            namespace=f"bench{uuid.uuid4().hex[:6]}",
            env={"CRM_LOG_LEVEL": "WARNING"}
            | ({"CRM_DB_PROFILE": str(Path(tmp) / "dbprofile")} if args.db_profile else {}),
            args=("--one-process",) if args.one_process else (),
        )

        async def everything() -> dict[str, Any]:
            mongo: AsyncMongoClient[Any] = AsyncMongoClient(server.url, tz_aware=True)
            try:
                result: dict[str, Any] = await ceilings(args, rabbit, hub.namespace, mongo)
                print("ceilings:", {k: round(v) for k, v in result.items()}, flush=True)
                hub.start()
                result |= await hub_run(args, hub, mongo, {"database": server_pid(server)})
                return result
            finally:
                await mongo.close()

        try:
            result = {"contacts": args.contacts, "burst_s": args.burst_s, **asyncio.run(everything())}
            print(report(result), flush=True)  # before the clean-up, which may fail on its own
        finally:
            hub.stop()
            server.stop()
            delete_namespace_queues(rabbit, hub.namespace)
        if profile := db_profile(Path(tmp) / "dbprofile", hub.namespace, int(result["hooks_in_all"])):
            print("\ndatabase commands per hook, all processes (database.collection.command):")
            print("\n".join(f"  {n:6.2f}  {key}" for key, n in profile))


if __name__ == "__main__":
    main()
