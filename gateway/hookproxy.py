"""``/hooks`` passed through to the connectors' ingress when it runs in other processes.

One pooled HTTP client per gateway process (keep-alive connections to every connectors
address, made once), the addresses of ``CRM_CONNECTORS_URL`` (one or several, comma-separated)
taken in turn, and a connectors process that cannot be reached is skipped for the next one. The
provider is never told 500 for a backend that is down: when no connectors process answers, the
answer is 503 with ``Retry-After`` (providers retry, and a retried hook is deduplicated on the
provider's own id), whether the connection was refused, timed out, or the answer never came.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from shared.errors import NotFound, ServiceUnavailable

log = logging.getLogger(__name__)

DEFAULT_TARGET = "http://127.0.0.1:8001"
OPS_ROUTES = frozenset({"health", "ready", "metrics"})
"""Served on the connectors' ingress port for probes and Prometheus: never passed through."""
RETRY_AFTER_S = 5
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def targets_of(value: str | None) -> list[str]:
    """The connectors addresses of ``CRM_CONNECTORS_URL`` (comma-separated), without a trailing /."""
    found = [t.strip().rstrip("/") for t in (value or "").split(",") if t.strip()]
    return found or [DEFAULT_TARGET]


class HookProxy:
    """The pass-through: ``mount(app)`` adds the route, ``aclose()`` closes the pool."""

    def __init__(
        self,
        targets: list[str],
        *,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        max_connections: int = 200,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.targets = targets
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.transport = transport
        self._client: httpx.AsyncClient | None = None
        self._turn = itertools.cycle(range(len(targets)))

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # made on first use, inside the serving event loop
            self._client = httpx.AsyncClient(
                timeout=self.timeout, limits=self.limits, transport=self.transport, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def mount(self, app: FastAPI) -> None:
        @app.api_route("/hooks/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
        async def hooks_proxy(rest: str, request: Request) -> Response:
            return await self.forward(rest, request)

    async def forward(self, rest: str, request: Request) -> Response:
        if rest.split("/", 1)[0] in OPS_ROUTES:  # the ingress process's own, not a channel's
            err = NotFound("channel")
            return JSONResponse(err.to_problem(), status_code=404, media_type="application/problem+json")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.body()
        start = next(self._turn)
        failure = "refused"
        for i in range(len(self.targets)):
            target = self.targets[(start + i) % len(self.targets)]
            try:
                upstream = await self.client.request(
                    request.method,
                    f"{target}/{rest}",
                    params=request.url.query,
                    headers=headers,
                    content=body,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # nothing reached that process: the next one may take the hook
                failure = "refused" if isinstance(exc, httpx.ConnectError) else "connect timeout"
                log.warning("connectors ingress unreachable", extra={"target": target, "error": failure})
                continue
            except httpx.HTTPError as exc:
                # sent, but no answer: it may have been accepted; the provider's retry is deduplicated
                log.warning(
                    "connectors ingress did not answer", extra={"target": target, "error": type(exc).__name__}
                )
                return unavailable("The hook ingress did not answer in time; retry later.")
            return Response(upstream.content, upstream.status_code, headers=passed_headers(upstream))
        return unavailable(f"The hook ingress is unreachable ({failure}); retry later.")


def passed_headers(upstream: httpx.Response) -> dict[str, str]:
    """The ingress's answer headers a provider may need (content type, Retry-After of a 429)."""
    return {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}


def unavailable(detail: str) -> JSONResponse:
    err = ServiceUnavailable(detail, headers={"Retry-After": str(RETRY_AFTER_S)})
    body: dict[str, Any] = err.to_problem()
    return JSONResponse(
        body, status_code=err.status, media_type="application/problem+json", headers=err.headers
    )
