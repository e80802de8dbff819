#!/usr/bin/env python3
"""Kill-and-restart cycles on one broker (not part of ``make test``).

Each cycle starts the whole hub (``crm run all``) on a fresh namespace, waits for ``/ready``,
kills it with SIGKILL and (unless ``--keep``) drops the namespace with ``crm broker drop``. After
the cycles the hub starts once more. It prints, per cycle, the time to ``/ready`` and the number of
queues on the broker, and exits non-zero when a start took longer than ``--max-ready-s`` or the
queue count grew (with ``--keep`` the count grows by design: that mode measures what leftovers do
to the broker).

    .venv/bin/python scripts/broker-cycles.py --cycles 30 --queue-type classic
    .venv/bin/python scripts/broker-cycles.py --cycles 30 --queue-type quorum --keep --ctl-node dev@localhost
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.localmongo import LocalMongo, free_port  # noqa: E402


def queue_count(node: str | None) -> int:
    cmd = ["rabbitmqctl", "list_queues", "name", "--quiet", "--no-table-headers"]
    if node:
        cmd[1:1] = ["-n", node]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    return len([line for line in out.splitlines() if line.strip()])


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], float | None, int]:
    port = free_port()
    env = {**env, "CRM_PORT": str(port)}
    out = open(log, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crm.cli", "run", "all"], cwd=ROOT, env=env, stdout=out, stderr=out
    )
    began = time.monotonic()
    while time.monotonic() - began < 120:
        if proc.poll() is not None:
            return proc, None, port
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc, time.monotonic() - began, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return proc, None, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument(
        "--rabbit-url", default=os.environ.get("CRM_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    ap.add_argument("--ctl-node", default=None, help="rabbitmqctl -n NODE (a private broker)")
    ap.add_argument("--queue-type", choices=["classic", "quorum"], default="classic")
    ap.add_argument("--keep", action="store_true", help="leave each namespace behind (what killed runs do)")
    ap.add_argument("--max-ready-s", type=float, default=15.0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crm-cycles-"))
    mongo = LocalMongo(":memory:", log_path=work / "mongo.log").start()
    base = {
        **os.environ,
        "CRM_RABBIT_URL": args.rabbit_url,
        "CRM_MONGO_URL": mongo.url,
        "CRM_QUEUE_TYPE": args.queue_type,
        "CRM_ROOT_TOKEN": "root-cycles",
        "CRM_LOG_FORMAT": "json",
        "CRM_BROKER_TIMEOUT_S": "30",
    }
    results: list[dict[str, object]] = []
    namespaces: list[str] = []
    failed = False
    try:
        before = queue_count(args.ctl_node)
        for i in range(args.cycles + 1):
            ns = f"cyc{uuid.uuid4().hex[:8]}"
            namespaces.append(ns)
            env = {**base, "CRM_NAMESPACE": ns, "CRM_DATA_DIR": str(work / ns)}
            proc, ready_s, _ = start(env, work / f"{ns}.log")
            final = i == args.cycles
            if final:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
            else:
                proc.kill()
                proc.wait()
            if not args.keep:
                subprocess.run(
                    [sys.executable, "-m", "crm.cli", "broker", "drop", ns],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    timeout=120,
                )
            queues = queue_count(args.ctl_node)
            row = {
                "cycle": i + 1,
                "final": final,
                "ready_s": None if ready_s is None else round(ready_s, 2),
                "queues": queues,
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            if ready_s is None or ready_s > args.max_ready_s:
                failed = True
                print(
                    f"start {i + 1} did not reach /ready within {args.max_ready_s} s (log: {work / ns}.log)"
                )
                break
            if not args.keep and queues > before:
                failed = True
                print(f"queue count grew: {before} -> {queues}")
        ready = [r["ready_s"] for r in results if r["ready_s"] is not None]
        summary = {
            "queue_type": args.queue_type,
            "keep": args.keep,
            "cycles": len(results),
            "ready_s_max": max(ready) if ready else None,
            "ready_s_median": sorted(ready)[len(ready) // 2] if ready else None,
            "queues_before": before,
            "queues_after": results[-1]["queues"] if results else None,
            "ok": not failed,
        }
        print(json.dumps(summary))
    finally:
        mongo.stop()
        if args.keep:
            print(f"namespaces left on the broker (drop with `crm broker drop`): {len(namespaces)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
