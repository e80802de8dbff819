"""A local stand-in for a provider's HTTP API (WhatsApp Cloud API, VK, Avito) in sender tests.

A real HTTP server on 127.0.0.1 and a free port, in a thread. Every request is recorded (method,
path, query, headers, raw body); the test scripts the answers: ``answer(status, json, headers)``
queues one, and when the queue is empty ``default`` answers (a callable given the request).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from shared.localmongo import free_port
from shared.netguard import GuardedTransport, UrlGuard


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """How long the stand-in waits before answering (a provider that does not answer in time)."""


class ProviderApi:
    def __init__(self, default: Callable[[Seen], Answer] | None = None) -> None:
        self.requests: list[Seen] = []
        self.queue: list[Answer] = []
        self.default = default or (lambda _seen: Answer(200, {}))
        self._lock = threading.Lock()
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="provider-api", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None, delay_s: float = 0.0
    ) -> None:
        with self._lock:
            self.queue.append(Answer(status, {} if body is None else body, headers or {}, delay_s))

    def _respond(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
            if self.queue:
                return self.queue.pop(0)
        return self.default(seen)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                ans = api._respond(seen)
                if ans.delay_s:
                    time.sleep(ans.delay_s)
                data = ans.body if isinstance(ans.body, bytes) else json.dumps(ans.body).encode()
                self.send_response(ans.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in ans.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> ProviderApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def provider_api(default: Callable[[Seen], Answer] | None = None) -> Iterator[ProviderApi]:
    api = ProviderApi(default).start()
    try:
        yield api
    finally:
        api.stop()


def guarded_client(*, allow_private: bool = True, timeout_s: float = 5.0) -> httpx.AsyncClient:
    """The client the connectors service gives senders: every call through the outbound guard
    (``allow_private`` is ``CRM_ALLOW_PRIVATE_URLS``, which a local stand-in needs)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s), transport=GuardedTransport(UrlGuard(allow_private=allow_private))
    )
