"""Webhook delivery benchmark: one subscription, a real local receiver, the MongoDB-protocol server.

    python -m tests.perf.webhooks [--events 300] [--per-subscription 2 8 16] [--receiver-ms 20]

For each per-subscription limit: ``--events`` public events are fanned out to one subscription
(``Webhooks.on_event``, what the gateway's consumer runs; timed as the fan-out rate, the rate the
hub can produce deliveries), then the delivery worker posts them, signed, to a local HTTP receiver
that takes ``--receiver-ms`` per request (a real endpoint does work too), until every one was
received: deliveries per second and CPU milliseconds of this process per delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from gateway.webhooks import Webhooks, WebhookSettings
from shared.clock import SystemClock, new_id
from shared.crypto import SecretBox
from shared.events import Envelope
from shared.localmongo import LocalMongo
from shared.mongo import mongo_client
from shared.netguard import UrlGuard


class Receiver:
    def __init__(self, delay_s: float, expect: int) -> None:
        self.count = 0
        self.done = threading.Event()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(delay_s)
                with outer.lock:
                    outer.count += 1
                    if outer.count >= expect:
                        outer.done.set()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def envelope(tenant: str) -> Envelope:
    event_id = new_id() + uuid.uuid4().hex[:4]
    return Envelope(
        event_id=event_id,
        event_type="contact.created",
        occurred_at=datetime.now(UTC),
        tenant_id=tenant,
        producer="bench",
        correlation_id=event_id,
        payload={"contact_id": event_id, "owner_id": None},
    )


async def run(mongo_url: str, events: int, per_subscription: int, receiver_ms: float) -> dict[str, float]:
    client = mongo_client(mongo_url)
    db = client[f"bench{uuid.uuid4().hex[:6]}_gateway"]
    receiver = Receiver(receiver_ms / 1000, events)
    settings = WebhookSettings(per_subscription=per_subscription, concurrency=max(16, per_subscription))
    hooks = Webhooks(
        db, SecretBox(Fernet.generate_key()), SystemClock(), settings, guard=UrlGuard(allow_private=True)
    )
    try:
        await db.deliveries.create_index([("state", 1), ("next_attempt_at", 1)])
        await hooks.create("T", "u", receiver.url, ["contact.created"], "bench-secret-1", None)
        started = time.perf_counter()
        for _ in range(events):
            await hooks.on_event(envelope("T"))
        fanned = time.perf_counter() - started
        cpu0, t0 = time.process_time(), time.perf_counter()
        hooks.start()
        await asyncio.to_thread(receiver.done.wait)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await hooks.stop()
        receiver.server.shutdown()
        await client.drop_database(db.name)
        await client.close()
    return {
        "per_subscription": per_subscription,
        "fan_out_per_s": events / fanned,
        "delivered_per_s": events / elapsed,
        "cpu_ms_per_delivery": cpu / events * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--per-subscription", type=int, nargs="+", default=[2, 8, 16])
    parser.add_argument("--receiver-ms", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mongo = LocalMongo(":memory:", log_path=Path(tmp) / "mongo.log").start()
        try:
            for n in args.per_subscription:
                out = asyncio.run(run(mongo.url, args.events, n, args.receiver_ms))
                print(
                    "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items())
                )
        finally:
            mongo.stop()


if __name__ == "__main__":
    main()
