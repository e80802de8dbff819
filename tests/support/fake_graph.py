"""A local stand-in for Meta's Graph API: ``GET /<leadgen_id>?access_token=...&fields=...``.

It answers a scripted list of failures first (by default ``500`` then ``429``), then the lead.
``down = True`` makes it fail every request until the test sets it back. Runs in a thread on a
free port; every request is recorded (path and query) for the test to inspect.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.localmongo import free_port


class FakeGraph:
    def __init__(self, leads: dict[str, dict[str, Any]], failures: tuple[int, ...] = (500, 429)) -> None:
        self.leads = dict(leads)
        self.failures = list(failures)
        self.down = False
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-graph", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v19.0"

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((path, query))
            if self.down:
                return 503, {"error": {"message": "Service temporarily unavailable", "code": 2}}
            if self.failures:
                status = self.failures.pop(0)
                return status, {"error": {"message": f"scripted failure {status}", "code": 4}}
        lead_id = path.rsplit("/", 1)[-1]
        if not query.get("access_token"):
            return 400, {"error": {"message": "An access token is required", "code": 104}}
        lead = self.leads.get(lead_id)
        if lead is None:
            return 400, {"error": {"message": "Unsupported get request", "code": 100}}
        return 200, lead

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                status, body = fake._answer(parts.path, query)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def hits(self, lead_id: str) -> int:
        with self._lock:
            return sum(1 for path, _ in self.requests if path.endswith(f"/{lead_id}"))

    def start(self) -> FakeGraph:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def fake_graph(
    leads: dict[str, dict[str, Any]], failures: tuple[int, ...] = (500, 429)
) -> Iterator[FakeGraph]:
    server = FakeGraph(leads, failures).start()
    try:
        yield server
    finally:
        server.stop()
