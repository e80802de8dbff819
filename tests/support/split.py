"""The hub split as a team deploys it: every service its own ``crm run <service>`` OS process, on
one broker namespace and one database, some of them in several replicas.

Each process gets the settings the deploy guide says every process must share (the same
``CRM_SECRET_KEY``, ``CRM_ROOT_TOKEN``, namespace, broker and database) and a port of its own:
the gateways their HTTP port, connectors their ingress port (where it serves ``/health`` and
``/ready`` too), every other service its health port (``--port``). The gateways pass ``/hooks``
on to every connectors replica (``CRM_CONNECTORS_URL`` lists them).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from crm.hub import SERVICES
from shared.localmongo import free_port
from tests.support.hub import ROOT, HubProcess
from tests.support.servers import delete_namespace_queues


class Proc:
    """One ``crm run <what>`` child."""

    def __init__(self, what: str, index: int, port: int, env: dict[str, str], log_dir: Path) -> None:
        self.what = what
        self.index = index
        self.port = port
        self.env = env
        self.log_path = log_dir / f"{what}-{index}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{self.what}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crm.cli", "run", self.what, "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
        )

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc and self.proc.returncode}:\n{self.tail()}"
            )
        try:
            return httpx.get(self.url + "/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """``kill -9``: no stop, nothing acknowledged or published on the way out."""
        self.stop(signal.SIGKILL)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class SplitHub:
    """Gateways, connectors, contacts, deals, tasks and analytics as separate processes."""

    def __init__(
        self,
        *,
        rabbit_url: str,
        mongo_url: str,
        data_dir: Path,
        replicas: dict[str, int],
        env: dict[str, str] | None = None,
    ) -> None:
        base = HubProcess(rabbit_url=rabbit_url, mongo_url=mongo_url, data_dir=data_dir, env=env)
        self.namespace = base.namespace
        self.root_token = base.root_token
        self.rabbit_url = rabbit_url
        self.data_dir = data_dir
        shared = {
            **base.env,
            "CRM_SECRET_KEY": Fernet.generate_key().decode(),  # one key for every process
        }
        shared.pop("CRM_PORT", None)
        self.procs: dict[str, list[Proc]] = {}
        for what in (*SERVICES, "gateway"):  # every service of the hub gets its process
            self.procs[what] = [
                Proc(what, i, free_port(), shared, data_dir) for i in range(replicas.get(what, 1))
            ]
        # webhook URLs name the first gateway, as they would the Ingress: every process must agree
        shared["CRM_PUBLIC_URL"] = self.url
        connectors = ",".join(p.url for p in self.procs["connectors"])
        for gw in self.procs["gateway"]:
            gw.env = {**shared, "CRM_PORT": str(gw.port), "CRM_CONNECTORS_URL": connectors}

    @property
    def url(self) -> str:
        return self.procs["gateway"][0].url

    def all(self) -> list[Proc]:
        return [p for group in self.procs.values() for p in group]

    def start(self, timeout_s: float = 120.0) -> SplitHub:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        services = [p for p in self.all() if p.what != "gateway"]
        for p in services:  # the services first: a gateway's /ready asks each of them
            p.start()
        self._wait(services, timeout_s)
        for p in self.procs["gateway"]:
            p.start()
        self._wait(self.procs["gateway"], timeout_s)
        return self

    def _wait(self, procs: list[Proc], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = list(procs)
        while waiting and time.monotonic() < deadline:
            waiting = [p for p in waiting if not p.ready()]
            if waiting:
                time.sleep(0.3)
        if waiting:
            tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in waiting)
            self.stop()
            raise RuntimeError(f"not ready in {timeout_s}s: {[p.name for p in waiting]}\n{tails}")

    def stop(self) -> None:
        for p in self.all():  # SIGTERM to all at once, then wait for each
            if p.proc and p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in self.all():
            p.stop()

    @contextmanager
    def serving(self) -> Iterator[SplitHub]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
            delete_namespace_queues(self.rabbit_url, self.namespace)
