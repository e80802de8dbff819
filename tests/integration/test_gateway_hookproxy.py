"""The gateway's /hooks pass-through to connectors replicas in other processes: real sockets, a
backend that is down (nothing listens on its port), one that accepts, one that never answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.hookproxy import HookProxy, targets_of
from shared.localmongo import free_port

pytestmark = pytest.mark.integration


class Ingress:
    """A stand-in connectors ingress: records each request, answers 429 with Retry-After for
    ``/limited``, sleeps ``delay`` before answering."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.peers: set[int] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append({"path": self.path, "body": body, "sig": self.headers.get("X-Sig")})
                outer.peers.add(self.client_address[1])
                time.sleep(delay)
                limited = self.path.startswith("/limited")
                payload = b'{"ok":true}'
                self.send_response(429 if limited else 200)
                if limited:
                    self.send_header("Retry-After", "7")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ingress() -> Iterator[Ingress]:
    server = Ingress()
    yield server
    server.close()


def gateway(proxy: HookProxy) -> httpx.AsyncClient:
    app = FastAPI()
    proxy.mount(app)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # a free port: connection refused


def test_connectors_url_may_list_several_addresses() -> None:
    assert targets_of(None) == ["http://127.0.0.1:8001"]
    assert targets_of(" http://a:8001/ , http://b:8001") == ["http://a:8001", "http://b:8001"]


async def test_backend_down_is_503_with_retry_after_never_500() -> None:
    proxy = HookProxy([dead_url(), dead_url()])
    async with gateway(proxy) as gw:
        r = await gw.post("/hooks/ch1", content=b"{}")
    await proxy.aclose()
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "unreachable" in r.json()["detail"]


async def test_a_dead_replica_is_skipped_and_one_pooled_connection_is_reused(ingress: Ingress) -> None:
    proxy = HookProxy([dead_url(), ingress.url])
    async with gateway(proxy) as gw:
        answers = [
            await gw.post(f"/hooks/ch{i}/events/call?x=1", content=b'{"n":1}', headers={"X-Sig": "s"})
            for i in range(6)
        ]
        limited = await gw.post("/hooks/limited", content=b"{}")
    await proxy.aclose()
    assert [a.status_code for a in answers] == [200] * 6
    assert [r["path"] for r in ingress.requests[:2]] == ["/ch0/events/call?x=1", "/ch1/events/call?x=1"]
    assert all(r["body"] == b'{"n":1}' and r["sig"] == "s" for r in ingress.requests[:6])
    assert len(ingress.peers) == 1  # keep-alive: one connection for every hook, not one each
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"  # passed on


async def test_a_backend_that_never_answers_is_503_not_a_hang() -> None:
    slow = Ingress(delay=3.0)
    try:
        proxy = HookProxy([slow.url], timeout_s=0.5)
        async with gateway(proxy) as gw:
            r = await gw.post("/hooks/ch1", content=b"{}")
        await proxy.aclose()
    finally:
        slow.close()
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "did not answer" in r.json()["detail"]


async def test_the_ingress_processs_own_routes_are_not_passed_through(ingress: Ingress) -> None:
    proxy = HookProxy([ingress.url])
    async with gateway(proxy) as gw:
        answers = [await gw.post(f"/hooks/{name}", content=b"{}") for name in ("health", "ready", "metrics")]
        answers.append(await gw.get("/hooks/metrics"))
    await proxy.aclose()
    assert [a.status_code for a in answers] == [404] * 4
    assert ingress.requests == []
