"""The whole hub as a child process (``crm run all``), driven over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from shared.localmongo import free_port
from tests.support.servers import claim_namespace, delete_namespace_queues

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class HubProcess:
    def __init__(
        self,
        *,
        rabbit_url: str,
        mongo_url: str,
        data_dir: Path,
        namespace: str | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.args = args
        """Extra arguments of ``crm run all`` (``--one-process``)."""
        self.port = free_port()
        self.namespace = namespace or f"t{uuid.uuid4().hex[:10]}"
        self.root_token = "root-" + uuid.uuid4().hex
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "CRM_PORT": str(self.port),
            "CRM_RABBIT_URL": rabbit_url,
            "CRM_MONGO_URL": mongo_url,
            "CRM_DATA_DIR": str(data_dir),
            "CRM_NAMESPACE": self.namespace,
            "CRM_ROOT_TOKEN": self.root_token,
            "CRM_LOG_FORMAT": "json",
            "CRM_RATE_LIMIT": "1000",
            "CRM_HOOK_RATE": "1000",
            "CRM_HOOK_CLIENT_RATE": "1000",
            # every test comes from 127.0.0.1: the failed-authentication budget is the whole suite's
            "CRM_AUTH_FAIL_RATE": "1000",
            "CRM_AUTH_FAIL_BURST": "100000",
            # The tests' stand-ins (webhook receivers, Graph API, Dovecot) listen on 127.0.0.1.
            "CRM_ALLOW_PRIVATE_URLS": "1",
            **(env or {}),
        }
        claim_namespace(rabbit_url, self.namespace)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"hub-{self.port}.log"

    def replica(self, *, same_port: bool = False) -> HubProcess:
        """Another hub on the same broker namespace, database and data dir (a second replica, or
        this hub restarted when ``same_port``), with the same root token."""
        other = HubProcess(
            rabbit_url=self.env["CRM_RABBIT_URL"],
            mongo_url=self.env["CRM_MONGO_URL"],
            data_dir=self.data_dir,
            namespace=self.namespace,
            env={"CRM_ROOT_TOKEN": self.root_token},
        )
        other.root_token = self.root_token
        if same_port:
            other.port = self.port
            other.env["CRM_PORT"] = str(self.port)
        return other

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> HubProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crm.cli", "run", "all", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"hub not ready in {timeout_s}s:\n{self.tail()}")

    @contextmanager
    def serving(self) -> Iterator[HubProcess]:
        """Started for the ``with`` block; then stopped and its namespace's queues dropped."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
            delete_namespace_queues(self.env["CRM_RABBIT_URL"], self.namespace)

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Api:
    """A small client for tests: one tenant's admin key, JSON in and out."""

    def __init__(self, base_url: str, key: str | None = None) -> None:
        self.base_url = base_url
        self.client = httpx.Client(
            base_url=base_url, timeout=60.0
        )  # a hang guard: a slow CSV import under load is not a hang
        self.key = key

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**h, **(extra or {})}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.patch(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.put(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.delete(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def as_key(self, key: str) -> Api:
        return Api(self.base_url, key)


def eventually(fn: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.1) -> T:
    """Poll ``fn`` until it returns something truthy (eventual effects of events)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except AssertionError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def touches(api: Api, contact_id: str) -> list[dict[str, Any]]:
    """A contact's timeline without the task and deal items that rules and deals add beside the
    touches (a missed call also gets its call-back task there)."""
    r = api.get(f"/api/v1/contacts/{contact_id}/timeline", params={"limit": 500})
    assert r.status_code == 200, r.text
    return [i for i in r.json()["items"] if i["kind"] not in ("task", "deal")]
