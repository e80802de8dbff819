"""``crm run all`` is a supervisor of two processes: the gateway with the hook ingress, and the
workers with every service. The ingress never shares an event loop with the consumers, the
gateway's /ready speaks for the workers, and no child outlives the supervisor."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.hub import HubProcess

pytestmark = pytest.mark.e2e


def children(pid: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False


def test_gateway_and_workers_run_apart_and_die_with_the_supervisor(
    rabbit: str, mongo_url: str, tmp_path: Path
) -> None:
    hub = HubProcess(rabbit_url=rabbit, mongo_url=mongo_url, data_dir=tmp_path)
    with hub.serving():
        assert hub.proc is not None
        kids = children(hub.proc.pid)
        roles = sorted(
            "gateway" if "run gateway --ingress" in cmd else "workers" if "run workers" in cmd else cmd
            for cmd in kids.values()
        )
        assert roles == ["gateway", "workers"]
        ready = httpx.get(hub.url + "/ready").json()
        assert ready == {"ready": True, "missing": []}

        # the workers gone: the gateway says which services are missing before it is stopped
        workers = next(pid for pid, cmd in kids.items() if "run workers" in cmd)
        os.kill(workers, signal.SIGSTOP)  # frozen, not dead: the supervisor keeps the gateway up
        try:
            state = httpx.get(hub.url + "/ready", timeout=10).json()
            assert not state["ready"] and "service:contacts" in state["missing"]
        finally:
            os.kill(workers, signal.SIGCONT)

        hub.proc.kill()  # kill -9 of `make run`
        hub.proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in kids):
            time.sleep(0.1)
        assert not [p for p in kids if alive(p)], "a child outlived the supervisor"
