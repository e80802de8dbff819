"""Plain ASGI pieces both HTTP surfaces use (the gateway and the connectors' hook ingress): a
problem+json answer, and :class:`BodyLimit` (413 over a body limit, by Content-Length or while
reading a chunked body; streaming responses stay streaming)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import AppError

PROBLEM = b"application/problem+json"


async def send_problem(send: Send, err: AppError) -> None:
    body = json.dumps(err.to_problem()).encode()
    headers = [(b"content-type", PROBLEM), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return str(v.decode("latin-1"))
    return None


class TooLarge(Exception):
    pass


STREAMED_PATHS = ("/api/v1/contacts/import",)
"""Routes that stream their body (CSV import): their own, larger limit; never buffered whole."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int, streamed_max_body: int | None = None) -> None:
        self.app = app
        self.default_max = max_body
        self.streamed_max = streamed_max_body or max_body

    def _error(self, limit: int) -> AppError:
        return AppError(
            f"The request body exceeds {limit} bytes.",
            status=413,
            code="payload_too_large",
            title="Payload too large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.streamed_max if scope["path"] in STREAMED_PATHS else self.default_max
        length = header(scope, b"content-length")
        if length and length.isdigit() and int(length) > limit:
            await send_problem(send, self._error(limit))
            return
        seen = 0
        started = False
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The app caught the overflow while reading (a chunked body) and answers something
                # else, e.g. a 400: the answer is the 413, once.
                if not started:
                    started = True
                    await send_problem(send, self._error(limit))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except TooLarge:
            if not started:
                started = True
                await send_problem(send, self._error(limit))
