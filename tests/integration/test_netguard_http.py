"""The guarded transport over a real socket: the request reaches the address the guard resolved
and checked, with the configured host name in ``Host`` (a receiver on 127.0.0.1 stands in)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import httpx
import pytest

from shared.netguard import BlockedAddress, GuardedTransport, UrlGuard

pytestmark = pytest.mark.integration


class Receiver(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        Receiver.seen.append(self.headers["host"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def test_the_request_goes_to_the_checked_address_with_the_configured_host(receiver: int) -> None:
    async def dns(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "erp.internal.test" else []

    guard = UrlGuard(allow_private=True, resolver=dns)  # the opt-in lets it reach the stand-in
    async with httpx.AsyncClient(transport=GuardedTransport(guard)) as client:
        r = await client.post(f"http://erp.internal.test:{receiver}/hook", content=b"{}")
    assert r.status_code == 204
    assert Receiver.seen[-1] == f"erp.internal.test:{receiver}"


async def test_without_the_opt_in_the_same_receiver_is_refused_before_connecting(receiver: int) -> None:
    before = len(Receiver.seen)
    async with httpx.AsyncClient(transport=GuardedTransport(UrlGuard())) as client:
        with pytest.raises(BlockedAddress):
            await client.post(f"http://127.0.0.1:{receiver}/hook", content=b"{}")
    assert len(Receiver.seen) == before
