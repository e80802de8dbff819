"""A local stand-in for the Telegram Bot API's ``sendMessage``, answering as Telegram documents it
(https://core.telegram.org/bots/api#making-requests): ``POST /bot<token>/sendMessage`` with JSON
``{"chat_id", "text"}`` → ``{"ok": true, "result": <Message>}``; an unknown token → ``401
{"ok": false, "error_code": 401, "description": "Unauthorized"}``; a flood limit → ``429`` with
``parameters.retry_after``.

``script`` is a list of answers to give first (``429`` or ``500``); ``hold`` makes it keep every
request open until ``release()`` (a hub killed while it waits). Every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.localmongo import free_port


class FakeTelegram:
    def __init__(self, token: str, script: tuple[int, ...] = ()) -> None:
        self.token = token
        self.script = list(script)
        self.sent: list[dict[str, Any]] = []
        """Messages accepted (what Telegram would deliver), in order."""
        self.requests = 0
        self.held = threading.Event()
        self._hold = False
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._next_id = 100
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-telegram", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self) -> None:
        self._hold = True
        self._release.clear()

    def release(self) -> None:
        self._hold = False
        self._release.set()

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests += 1
            if path != f"/bot{self.token}/sendMessage":
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            if self.script:
                status = self.script.pop(0)
                if status == 429:
                    return 429, {
                        "ok": False,
                        "error_code": 429,
                        "description": "Too Many Requests: retry after 1",
                        "parameters": {"retry_after": 1},
                    }
                return status, {"ok": False, "error_code": status, "description": "Internal Server Error"}
            if "chat_id" not in body or not body.get("text"):
                return 400, {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: message text is empty",
                }
            self._next_id += 1
            self.sent.append(body)
            message = {
                "message_id": self._next_id,
                "from": {"id": 42, "is_bot": True, "first_name": "Shop bot", "username": "shop_bot"},
                "chat": {"id": body["chat_id"], "type": "private"},
                "date": int(time.time()),
                "text": body["text"],
            }
            return 200, {"ok": True, "result": message}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                status, answer = fake._answer(self.path, body if isinstance(body, dict) else {})
                if fake._hold:
                    fake.held.set()
                    fake._release.wait(timeout=120)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller is gone (killed while we held the answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> FakeTelegram:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def fake_telegram(token: str, script: tuple[int, ...] = ()) -> Iterator[FakeTelegram]:
    server = FakeTelegram(token, script).start()
    try:
        yield server
    finally:
        server.stop()
