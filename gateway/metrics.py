"""Prometheus metrics of one gateway process (its own registry: no module-level globals).

- ``crm_http_requests_total{method,route,status}`` and ``crm_http_request_seconds{method,route}``:
  by route *template* (``/api/v1/contacts/{contact_id}``), never by raw path (ids would explode it).
- ``crm_hook_requests_total{status}``: acceptance of inbound hooks.
- ``crm_event_lag_seconds``: from an event's ``occurred_at`` to this gateway seeing it (queue lag).
- ``crm_webhook_attempts_total{outcome}``, ``crm_webhook_pending``, ``crm_webhook_oldest_due_seconds``,
  ``crm_sse_streams``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.clock import Clock


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "crm_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crm_http_request_seconds",
            "Time to the first response byte",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.hooks = Counter("crm_hook_requests", "Inbound hook requests", ["status"], registry=self.registry)
        self.event_lag = Histogram(
            "crm_event_lag_seconds",
            "Delay from an event's occurrence to the gateway consuming it",
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.webhook_attempts = Counter(
            "crm_webhook_attempts", "Outbound webhook attempts", ["outcome"], registry=self.registry
        )
        self.sse_streams = Gauge("crm_sse_streams", "Open SSE streams", registry=self.registry)
        self.webhook_pending = Gauge(
            "crm_webhook_pending", "Webhook deliveries not yet delivered or failed", registry=self.registry
        )
        self.webhook_lag = Gauge(
            "crm_webhook_oldest_due_seconds",
            "How long the oldest due webhook delivery has been waiting (delivery queue lag)",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe_event(self, occurred_at: datetime, clock: Clock) -> None:
        self.event_lag.observe(max(0.0, (clock.now() - occurred_at).total_seconds()))

    def webhook_outcome(self, outcome: str) -> None:
        self.webhook_attempts.labels(outcome=outcome).inc()


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    if scope["path"].startswith("/hooks/"):
        return "/hooks/{channel_id}"
    return "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request (streams are timed to their first byte)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        timed = False
        m = self.metrics()

        async def watch(message: Message) -> None:
            nonlocal status, timed
            if message["type"] == "http.response.start":
                status = message["status"]
                route = route_template(scope)
                m.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
                timed = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = route_template(scope)
            if not timed:
                m.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
            m.requests.labels(scope["method"], route, str(status)).inc()
            if scope["path"].startswith("/hooks/"):
                m.hooks.labels(str(status)).inc()
