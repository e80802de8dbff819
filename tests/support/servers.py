"""Real servers for tests: CRM_RABBIT_URL / CRM_MONGO_URL when set, else local ones.

No Docker engine on these machines, so testcontainers is used only when one answers; otherwise the
local RabbitMQ (started by .ci/run) and a SecantusDB subprocess per test session.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_RABBIT = "amqp://guest:guest@127.0.0.1:5672/"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def rabbit_url() -> str:
    url = os.environ.get("CRM_RABBIT_URL")
    if url:
        return url
    if port_open("127.0.0.1", 5672):
        return DEFAULT_RABBIT
    if docker_available():  # pragma: no cover - no Docker engine here
        from testcontainers.community.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13-management").start()
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        return f"amqp://guest:guest@{host}:{port}/"
    raise RuntimeError("RabbitMQ is not reachable on 127.0.0.1:5672: run `rabbitmq-server -detached`.")


def mongo_container_url() -> str | None:
    """A MongoDB 7 replica set in a container when a Docker engine answers, else ``None``."""
    if not docker_available():
        return None
    from testcontainers.community.mongodb import MongoDbContainer  # pragma: no cover - no Docker engine here

    container = MongoDbContainer("mongo:7.0").start()  # pragma: no cover
    return str(container.get_connection_url())  # pragma: no cover


LEDGER = Path(tempfile.gettempdir()) / "crm-test-namespaces"
"""One file per namespace a test run created on a broker (``<pid> <url>``): a run that was killed
before its teardown leaves its files, and the next run drops those namespaces."""


TEST_SERVICES = ("flaky", "tap", "versioned")
"""Services and queues that only tests define (dropped with the namespace too; ``tap``: a
probe queue bound to the exchanges, counting what is published)."""


def claim_namespace(url: str, namespace: str) -> None:
    LEDGER.mkdir(parents=True, exist_ok=True)
    (LEDGER / namespace).write_text(f"{os.getpid()} {url}")


@functools.cache
def _legacy_suffixes() -> tuple[str, ...]:
    from crm.cli import legacy_queue_names

    return tuple(n.removeprefix("NS.") for n in legacy_queue_names("NS"))


def delete_namespace_queues(url: str, namespace: str) -> None:
    """Drop every queue and exchange a test namespace declared (``crm broker drop``), today's
    layout and the old one, so runs never pile up on a shared broker."""
    from crm.hub import CONSUMING, SERVICES
    from shared.bus import drop_namespace
    from shared.settings import Settings

    settings = Settings(namespace=namespace, rabbit_url=url)
    from crm.hub import topology_of

    topology = topology_of(settings)
    queues = [
        *topology.durable_queues((*CONSUMING, *TEST_SERVICES), SERVICES),
        *(f"{namespace}.{s}" for s in _legacy_suffixes()),
    ]
    try:
        asyncio.run(drop_namespace(url, topology, queues, timeout_s=20))
    except Exception:
        return  # the broker is gone: the ledger entry stays for the next run
    (LEDGER / namespace).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_abandoned_namespaces(url: str) -> list[str]:
    """Drop the namespaces of test runs that died before their teardown (their pid is gone)."""
    dropped: list[str] = []
    if not LEDGER.is_dir():
        return dropped
    for entry in sorted(LEDGER.iterdir()):
        try:
            pid_text, _, owner_url = entry.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            entry.unlink(missing_ok=True)
            continue
        if _alive(pid) or owner_url.strip() != url:
            continue
        delete_namespace_queues(url, entry.name)
        dropped.append(entry.name)
    return dropped


TEST_NAMESPACE = re.compile(r"^(t[0-9a-f]{10}|bench[0-9a-f]{6})\.")


def delete_dead_test_namespaces(url: str) -> list[str]:
    """Drop what killed runs left behind: namespaces in the ledger whose run is gone, and (on the
    local default broker, which ``rabbitmqctl`` reaches) test namespaces of the old layout that
    no consumer uses any more."""
    dropped = delete_abandoned_namespaces(url)
    if url != DEFAULT_RABBIT or not shutil.which("rabbitmqctl"):
        return dropped
    try:
        out = subprocess.run(
            ["rabbitmqctl", "list_queues", "name", "consumers", "--quiet", "--no-table-headers"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return dropped
    live: set[str] = set()
    seen: set[str] = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 2 or not (m := TEST_NAMESPACE.match(parts[0])):
            continue
        namespace = m.group(1)
        seen.add(namespace)
        if parts[1] != "0":
            live.add(namespace)
    for namespace in sorted(seen - live):
        delete_namespace_queues(url, namespace)
        dropped.append(namespace)
    return dropped


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5672


class PrivateRabbit:
    """A RabbitMQ node of a test's own (its node name, ports, config and data dir under a temp
    dir), for tests that stop and start the broker without touching the shared one."""

    def __init__(self, base: Path) -> None:
        from shared.localmongo import free_port

        self.dir = base
        self.name = f"crmtest{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, timeout_s: float = 60) -> PrivateRabbit:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0 and shutil.which("chown"):
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=False)
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True, timeout=30)
        self.wait_open(timeout_s)
        return self

    def wait_open(self, timeout_s: float = 60) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.2)
        raise RuntimeError(f"private RabbitMQ did not open port {self.port}")

    def stop(self) -> None:
        try:
            self.ctl("stop", timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
