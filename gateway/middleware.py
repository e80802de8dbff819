"""Cross-cutting HTTP concerns as plain ASGI middleware (streaming responses stay streaming).

- :class:`shared.asgi.BodyLimit` (413 over ``CRM_MAX_BODY``) is shared with the hook ingress.
- :class:`RateLimit`: a token bucket per API key (or client address); 429 with ``Retry-After``.
- :class:`Idempotency`: ``Idempotency-Key`` on POST: the same key and body within 24 h answer the
  first response again; the same key with another body is a 422.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.asgi import STREAMED_PATHS, send_problem
from shared.asgi import header as _header
from shared.clock import Clock
from shared.errors import AppError, Conflict, ValidationFailed

MAX_IDEMPOTENCY_KEY = 200


SESSION_COOKIE = b"crm_session"


def session_cookie(scope: Scope) -> str | None:
    """The console's session cookie of a request, if it sends one."""
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE.decode() and value:
            return value
    return None


def caller_key(scope: Scope) -> str:
    """Who is calling, for the per-caller namespaces (idempotent answers, rate buckets): the
    ``Authorization`` header, else the session cookie (hashed), else nobody."""
    auth = _header(scope, b"authorization")
    if auth:
        return auth
    cookie = session_cookie(scope)
    return "session:" + hashlib.sha256(cookie.encode()).hexdigest() if cookie else ""


def rate_key(authorization: str | None, client: str, session: str | None = None) -> str:
    """The bucket of a request: the key id of a well-formed API key (``crm_<id>_<secret>``), however
    the header is spelled (``bEaReR``, extra spaces); another token by its hash; else the client."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            parts = token.split("_", 2)
            if len(parts) == 3 and parts[0] == "crm" and parts[1]:
                return "key:" + parts[1]
            return "tok:" + hashlib.sha256(token.encode()).hexdigest()
    if session:
        return "ses:" + hashlib.sha256(session.encode()).hexdigest()
    return f"ip:{client}"


class RateLimit:
    """Token bucket per API key: ``rate`` tokens a second, up to ``burst``. Failed authentication
    (401) also takes a token from the client address's own bucket (``fail_rate``, ``fail_burst``):
    once it is empty that address gets 429 whatever key it sends, so guessing keys is limited."""

    def __init__(
        self,
        app: ASGIApp,
        rate: float,
        burst: int,
        prefixes: tuple[str, ...] = ("/api/",),
        fail_rate: float = 1.0,
        fail_burst: int = 20,
    ) -> None:
        self.app = app
        self.rate = rate
        self.burst = burst
        self.prefixes = prefixes
        self.fail_rate = fail_rate
        self.fail_burst = fail_burst
        self.buckets: dict[str, tuple[float, float]] = {}
        self.failures: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> float:
        """0 when allowed, else seconds until a token is there."""
        return self._take(self.buckets, key, now, self.rate, self.burst)

    @staticmethod
    def _take(
        buckets: dict[str, tuple[float, float]],
        key: str,
        now: float,
        rate: float,
        burst: int,
        cost: float = 1,
    ) -> float:
        tokens, last = buckets.get(key, (float(burst), now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens >= 1:
            buckets[key] = (tokens - cost, now)
            return 0.0
        buckets[key] = (tokens, now)
        return (1 - tokens) / rate

    def _problem(self, wait: float, what: str) -> AppError:
        return AppError(
            what,
            status=429,
            code="rate_limited",
            title="Too many requests",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes) or self.rate <= 0:
            await self.app(scope, receive, send)
            return
        client = str((scope.get("client") or ("?", 0))[0])
        now = time.monotonic()
        if self.fail_rate > 0:
            wait = self._take(self.failures, client, now, self.fail_rate, self.fail_burst, cost=0)
            if wait > 0:
                await send_problem(send, self._problem(wait, "Too many failed authentications."))
                return
        wait = self.take(rate_key(_header(scope, b"authorization"), client, session_cookie(scope)), now)
        if wait > 0:
            await send_problem(
                send, self._problem(wait, f"More than {self.rate:g} requests a second for this API key.")
            )
            return
        if len(self.buckets) > 100_000:
            self.buckets.clear()
        if len(self.failures) > 100_000:
            self.failures.clear()

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401 and self.fail_rate > 0:
                self._take(self.failures, client, time.monotonic(), self.fail_rate, self.fail_burst)
            await send(message)

        await self.app(scope, receive, counting_send)


class Idempotency:
    """Replays the first response for a repeated ``Idempotency-Key`` (per API key, 24 h).

    A buffered body is hashed before the request runs. A streamed body (CSV import) is never held
    whole: the first request is hashed as it streams through and its answer remembered only when
    the route read the body to the end; a repeat is read through (hashing, nothing kept) and then
    answered like any other: the first answer, 422 for another body, 409 while the first still runs.
    """

    def __init__(
        self,
        app: ASGIApp,
        collection: Callable[[], Any],
        clock: Clock,
        ttl_s: int = 86400,
        authenticate: Callable[[Scope], Awaitable[Any]] | None = None,
    ) -> None:
        self.app = app
        self.collection = collection
        self.clock = clock
        self.ttl = timedelta(seconds=ttl_s)
        self.authenticate = authenticate
        """Checks the caller before a first answer is replayed (raises an AppError, e.g. 401 for a
        key revoked since): a replay never answers a caller that would not get through now."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        idem = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if not idem or scope["method"] != "POST" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        if len(idem) > MAX_IDEMPOTENCY_KEY or any(ord(c) < 32 or ord(c) == 127 for c in idem):
            await send_problem(
                send,
                ValidationFailed(
                    {"Idempotency-Key": f"must be 1-{MAX_IDEMPOTENCY_KEY} printable characters"},
                    detail=f"The Idempotency-Key header must be at most {MAX_IDEMPOTENCY_KEY} characters.",
                ),
            )
            return
        streamed = scope["path"] in STREAMED_PATHS
        auth = caller_key(scope)  # a console session's answers are its own, not every cookie's
        hasher = hashlib.sha256(scope["path"].encode() + b"\0")
        body = b""
        digest: str | None = None
        if not streamed:
            body = await _read_all(receive, hasher, keep=True)
            digest = hasher.hexdigest()
        doc_id = hashlib.sha256(f"{auth}\0{idem}".encode()).hexdigest()
        coll = self.collection()
        now = self.clock.now()
        try:
            await coll.insert_one(
                {"_id": doc_id, "hash": digest, "state": "pending", "expires_at": now + self.ttl}
            )
        except DuplicateKeyError:
            doc = await coll.find_one({"_id": doc_id})
            if streamed:
                await _read_all(receive, hasher, keep=False)
                digest = hasher.hexdigest()
            if self.authenticate is not None:
                try:
                    await self.authenticate(scope)
                except AppError as err:
                    await send_problem(send, err)
                    return
            await self._answer_repeat(send, doc, digest)
            return

        body_read = not streamed
        handed = False

        async def replay() -> Message:
            nonlocal body_read, handed
            if not streamed:
                if handed:  # the buffered body went in once; then whatever the server says
                    return await receive()
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                hasher.update(message.get("body", b""))
                body_read = body_read or not message.get("more_body")
            return message

        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        settled = False

        async def settle() -> None:
            """Remember the answer (or forget the key after a failure) before the client can see
            the end of it, so an immediate retry already finds it."""
            nonlocal settled
            if settled:
                return
            settled = True
            # A failure is not remembered, nor an answer to a streamed body the route did not read
            # to its end (its hash would not be the body's): the client may retry with the same key.
            # Nor a refusal of the caller (401, 403): it says nothing about the request itself.
            if status < 500 and status not in (401, 403) and body_read:
                await coll.update_one(
                    {"_id": doc_id},
                    {
                        "$set": {
                            "state": "done",
                            "hash": hasher.hexdigest(),
                            "status": status,
                            "headers": headers,
                            "body": b"".join(chunks),
                        }
                    },
                )
            else:
                await coll.delete_one({"_id": doc_id})

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k.decode(), v.decode("latin-1")) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    await settle()
            await send(message)

        try:
            await self.app(scope, replay, capture)
        finally:
            if not settled:
                status = 500
                await settle()

    @staticmethod
    async def _answer_repeat(send: Send, doc: dict[str, Any] | None, digest: str | None) -> None:
        if doc and doc.get("hash") is not None and doc["hash"] != digest:
            await send_problem(
                send,
                ValidationFailed(
                    {"Idempotency-Key": "was used with a different request body"},
                    detail="This Idempotency-Key was already used with a different request.",
                ),
            )
            return
        if doc and doc.get("state") == "done":
            replayed = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in doc["headers"]]
            replayed.append((b"idempotent-replayed", b"true"))
            await send({"type": "http.response.start", "status": doc["status"], "headers": replayed})
            await send({"type": "http.response.body", "body": doc["body"]})
            return
        await send_problem(send, Conflict("A request with this Idempotency-Key is still in progress."))


async def _read_all(receive: Receive, hasher: Any, *, keep: bool) -> bytes:
    """Read a request body to its end, hashing it; kept only when ``keep`` (a streamed body is not)."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        hasher.update(chunk)
        if keep:
            parts.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(parts)


class ContentType:
    """415 for an API write whose body is not JSON (hooks have their own rules).

    ``allowed`` are further media types some routes accept (uploads)."""

    def __init__(
        self, app: ASGIApp, allowed: tuple[str, ...] = ("multipart/form-data",), prefix: str = "/api/"
    ) -> None:
        self.app = app
        self.allowed = allowed
        self.prefix = prefix

    @staticmethod
    def has_body(scope: Scope) -> bool:
        length = _header(scope, b"content-length")
        if length is not None:
            return length.strip() not in ("", "0")
        return _header(scope, b"transfer-encoding") is not None

    def acceptable(self, content_type: str | None, path: str = "") -> bool:
        if not content_type:
            return False
        media = content_type.split(";", 1)[0].strip().lower()
        if path in STREAMED_PATHS and media in ("text/csv", "application/octet-stream", "text/plain"):
            return True
        return media == "application/json" or media.endswith("+json") or media in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "PUT", "PATCH")
            and scope["path"].startswith(self.prefix)
            and self.has_body(scope)
            and not self.acceptable(_header(scope, b"content-type"), scope["path"])
        ):
            await send_problem(
                send,
                AppError(
                    "Send the body as JSON with `Content-Type: application/json`.",
                    status=415,
                    code="unsupported_media_type",
                    title="Unsupported media type",
                ),
            )
            return
        await self.app(scope, receive, send)
