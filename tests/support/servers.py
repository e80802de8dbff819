"""Real servers for tests: CRM_RABBIT_URL / CRM_MONGO_URL when set, else local ones.

No Docker engine on these machines, so testcontainers is used only when one answers; otherwise the
local RabbitMQ (started by .ci/run) and a SecantusDB subprocess per test session.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
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


def delete_namespace_queues(url: str, namespace: str, listed: str | None = None) -> None:
    """Drop every queue a test namespace declared, so runs never pile up on a shared broker."""
    if not shutil.which("rabbitmqctl"):
        return
    out = listed
    if out is None:
        try:
            out = subprocess.run(
                ["rabbitmqctl", "list_queues", "name", "--quiet", "--no-table-headers"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return
    names = [line.split()[0] for line in out.splitlines() if line.strip().startswith(namespace + ".")]
    if not names:
        return

    async def drop() -> None:
        import aio_pika

        conn = await aio_pika.connect(url)
        async with conn:
            for name in names:
                ch = await conn.channel()
                try:
                    await ch.queue_delete(name)
                except Exception:
                    pass
            ch = await conn.channel()
            for ex in (f"{namespace}.events", f"{namespace}.dead-letter"):
                try:
                    await ch.exchange_delete(ex)
                except Exception:
                    pass

    asyncio.run(drop())


TEST_NAMESPACE = re.compile(r"^(t[0-9a-f]{10}|bench[0-9a-f]{6})\.")


def delete_dead_test_namespaces(url: str) -> list[str]:
    """Drop the queues of test namespaces left by runs that were killed before their teardown
    (every queue of the namespace without a consumer). Each namespace declares ~50 quorum queues,
    and a broker started with the default 1,024 file descriptors stops accepting connections once
    enough of them pile up."""
    if not shutil.which("rabbitmqctl"):
        return []
    try:
        out = subprocess.run(
            ["rabbitmqctl", "list_queues", "name", "consumers", "--quiet", "--no-table-headers"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
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
    dead = sorted(seen - live)
    for namespace in dead:
        delete_namespace_queues(url, namespace, listed=out)
    return dead


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5672
