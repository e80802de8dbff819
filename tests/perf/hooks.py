"""Hook ingress benchmark: the whole hub as a process, real RabbitMQ, real HTTP.

    python -m tests.perf.hooks [--hooks 500] [--concurrency 16]

Measures, for generic form posts of new people:
- accept latency: the 2xx of ``POST /hooks/<channel>`` (signature check, parse, persistent publish
  with a broker confirm) — what a provider waits for; under load, then paced (4 posts a
  second once the pipeline is idle, so nothing else runs when each arrives: the cost of the accept
  path itself);
- accept throughput: hooks answered per second;
- capture rate: from the first post until every contact is searchable through the API
  (connectors → contacts, with transactions and outbox on the MongoDB-protocol server).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from shared.localmongo import LocalMongo
from tests.support.hub import HubProcess
from tests.support.servers import delete_namespace_queues, rabbit_url


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def run(n: int, concurrency: int, base: str, root: str, paced_n: int = 100) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post(
            "/api/v1/tenants", json={"name": "bench"}, headers={"Authorization": f"Bearer {root}"}
        )
        key = r.json()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        channel = (
            await client.post(
                "/api/v1/channels", json={"kind": "form", "name": "b", "intake": "auto"}, headers=auth
            )
        ).json()
        latencies: list[float] = []
        sem = asyncio.Semaphore(concurrency)

        async def post(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                resp = await client.post(
                    channel["webhook_url"],
                    data={
                        "name": f"Клиент {i}",
                        "phone": f"+7 915 {i // 10000:03d} {i % 10000 // 100:02d} {i % 100:02d}",
                    },
                )
                latencies.append(time.perf_counter() - t)
                assert resp.status_code == 200, resp.text

        start = time.perf_counter()
        await asyncio.gather(*(post(i) for i in range(n)))
        accepted = time.perf_counter() - start
        while True:
            page = (await client.get("/api/v1/channels/" + channel["id"], headers=auth)).json()
            last = f"+7915{(n - 1) // 10000:03d}{(n - 1) % 10000 // 100:02d}{(n - 1) % 100:02d}"
            found = (await client.get("/api/v1/contacts", params={"phone": last}, headers=auth)).json()[
                "items"
            ]
            if found and page["health"]["received"] >= n:
                # every contact searchable? check an evenly spread sample of 50
                missing = 0
                for i in range(0, n, max(1, n // 50)):
                    phone = f"+7915{i // 10000:03d}{i % 10000 // 100:02d}{i % 100:02d}"
                    items = (
                        await client.get("/api/v1/contacts", params={"phone": phone}, headers=auth)
                    ).json()
                    missing += 0 if items["items"] else 1
                if not missing:
                    break
            if time.perf_counter() - start > 600:
                raise RuntimeError("capture did not finish in 10 minutes")
            await asyncio.sleep(0.2)
        captured = time.perf_counter() - start
        await asyncio.sleep(2)  # the pipeline is idle now
        paced: list[float] = []
        for i in range(paced_n):
            t = time.perf_counter()
            resp = await client.post(
                channel["webhook_url"], data={"name": f"Paced {i}", "phone": f"+7914{i:07d}"}
            )
            paced.append(time.perf_counter() - t)
            assert resp.status_code == 200, resp.text
            await asyncio.sleep(0.25)
    return {
        "hooks": n,
        "paced_accept_p50_ms": pct(paced, 0.5) * 1000,
        "paced_accept_p95_ms": pct(paced, 0.95) * 1000,
        "accept_p50_ms": pct(latencies, 0.5) * 1000,
        "accept_p95_ms": pct(latencies, 0.95) * 1000,
        "accept_mean_ms": statistics.fmean(latencies) * 1000,
        "accepted_per_s": n / accepted,
        "captured_per_s": n / captured,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hooks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--paced", type=int, default=100, help="posts at 4/s before the load")
    parser.add_argument("--one-process", action="store_true", help="crm run all --one-process")
    args = parser.parse_args()
    rabbit = rabbit_url()
    with tempfile.TemporaryDirectory() as tmp:
        mongo = LocalMongo(":memory:", log_path=Path(tmp) / "mongo.log").start()
        hub = HubProcess(
            rabbit_url=rabbit,
            mongo_url=mongo.url,
            data_dir=Path(tmp) / "hub",
            namespace=f"bench{uuid.uuid4().hex[:6]}",
            env={"CRM_LOG_LEVEL": "WARNING"},
            args=("--one-process",) if args.one_process else (),
        )
        try:
            hub.start()
            out = asyncio.run(run(args.hooks, args.concurrency, hub.url, hub.root_token, args.paced))
        finally:
            hub.stop()
            mongo.stop()
            delete_namespace_queues(rabbit, hub.namespace)
    for k, v in out.items():
        print(f"{k:>16}: {v:.1f}" if isinstance(v, float) else f"{k:>16}: {v}")


if __name__ == "__main__":
    main()
