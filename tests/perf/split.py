"""Messages per second per core of each service, measured on the split deployment.

    python -m tests.perf.split [--hooks 400] [--concurrency 16]

Every service runs as its own process (tests/support/split.py: one replica each, so a process's
numbers are the service's). Form hooks of new people are posted through the gateway until every
contact is searchable; meanwhile each process's CPU time (``/proc/<pid>/stat``, user + system) is
read before and after, and each process's ``/metrics`` says how many events its handlers ran and
how many RPC requests it answered (the connectors' ingress: how many hooks it accepted). The
figure per service is messages / CPU seconds: what one fully used core of that service handles.
Wall-clock rates on a shared machine say little; CPU per message travels better.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import time
from pathlib import Path

import httpx

from shared.localmongo import LocalMongo
from tests.support.servers import rabbit_url
from tests.support.split import Proc, SplitHub

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / TICK


def metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def scrape(p: Proc, token: str) -> str:
    return httpx.get(p.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10).text


async def count(client: httpx.AsyncClient, auth: dict[str, str]) -> int:
    """The tenant's contacts, page by page."""
    total, cursor = 0, None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/contacts", params=params, headers=auth)).json()
        total += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return total


async def load(hub: SplitHub, n: int, concurrency: int) -> float:
    root = {"Authorization": f"Bearer {hub.root_token}"}
    async with httpx.AsyncClient(base_url=hub.url, timeout=60) as client:
        key = (await client.post("/api/v1/tenants", json={"name": "perf"}, headers=root)).json()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        channel = (
            await client.post(
                "/api/v1/channels", json={"kind": "form", "name": "p", "intake": "auto"}, headers=auth
            )
        ).json()
        sem = asyncio.Semaphore(concurrency)

        async def post(i: int) -> None:
            async with sem:
                r = await client.post(
                    channel["webhook_url"], data={"name": f"P {i}", "email": f"p{i}@perf.example"}
                )
                assert r.status_code == 200, r.text

        start = time.perf_counter()
        await asyncio.gather(*(post(i) for i in range(n)))
        while True:  # until every contact is there
            if await count(client, auth) >= n:
                break
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # the tail: deals, tasks, analytics follow the events
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hooks", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mongo = LocalMongo(":memory:", log_path=Path(tmp) / "mongo.log").start()
        hub = SplitHub(
            rabbit_url=rabbit_url(),
            mongo_url=mongo.url,
            data_dir=Path(tmp) / "split",
            replicas={},
            env={"CRM_LOG_LEVEL": "WARNING"},
        )
        try:
            with hub.serving():
                procs = hub.all()
                before = {p.name: cpu_seconds(p.proc.pid) for p in procs if p.proc}
                metrics0 = {p.name: scrape(p, hub.root_token) for p in procs}
                mongo_cpu0 = cpu_seconds(mongo.proc.pid) if mongo.proc else None
                wall = asyncio.run(load(hub, args.hooks, args.concurrency))
                after = {p.name: cpu_seconds(p.proc.pid) for p in procs if p.proc}
                metrics1 = {p.name: scrape(p, hub.root_token) for p in procs}
                mongo_cpu = cpu_seconds(mongo.proc.pid) - mongo_cpu0 if mongo.proc and mongo_cpu0 else None
        finally:
            mongo.stop()
    print(f"{args.hooks} form hooks of new people, {wall:.1f} s wall clock")
    print(f"{'process':<14}{'cpu s':>8}{'events':>8}{'rpc':>6}{'hooks':>7}{'msgs/cpu-s':>12}")
    for p in procs:
        cpu = after[p.name] - before[p.name]

        def delta(name: str, p: Proc = p) -> float:
            return metric(metrics1[p.name], name) - metric(metrics0[p.name], name)

        events = delta("crm_events_handled_total")
        rpc = delta("crm_rpc_requests_total")
        hooks = delta("crm_hook_accept_seconds_count") or (
            delta("crm_hook_requests_total") if p.what == "gateway" else 0
        )
        msgs = events + rpc + hooks
        print(
            f"{p.name:<14}{cpu:>8.1f}{events:>8.0f}{rpc:>6.0f}{hooks:>7.0f}{msgs / cpu if cpu else 0:>12.0f}"
        )
    if mongo_cpu is not None:
        print(f"{'database':<14}{mongo_cpu:>8.1f}")


if __name__ == "__main__":
    main()
