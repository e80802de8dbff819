"""Prometheus metrics of one service process (``crm run contacts``, ``crm run workers``...).

Its own registry (no module-level globals), rendered by ``GET /metrics`` of the process's health
port (:mod:`shared.health`):

- ``crm_consumer_queue_messages{queue}``: events waiting in each hosted service's queue, not yet
  handed to a consumer (consumer lag, in messages; read from the broker at scrape time).
- ``crm_consumer_event_lag_seconds{service}``: from an event's ``occurred_at`` to a handler of
  this process starting on it (consumer lag, in time).
- ``crm_events_handled_total{service,outcome}``: handler runs (``ok`` / ``error``).
- ``crm_rpc_requests_total{service}``: RPC requests this process answered (replicas share them).
- ``crm_outbox_backlog{service}``: outbox documents not yet published (normally 0 or a few for
  an instant; a growing backlog means publishing fails), counted at scrape time.
- ``crm_dead_letters``: messages in ``<ns>.dead-letters`` (nothing consumes it: alert on it).
- ``crm_hook_accept_seconds{status}``: connectors' ingress, time to answer a hook (accept
  latency: verify, parse, a persistent publish with its confirm).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.bus import RpcMethod
from shared.events import Envelope

if TYPE_CHECKING:
    from shared.service import Host as Hub

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
ACCEPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_messages = Gauge(
            "crm_consumer_queue_messages",
            "Events waiting in a service's queue (consumer lag in messages)",
            ["queue"],
            registry=self.registry,
        )
        self.event_lag = Histogram(
            "crm_consumer_event_lag_seconds",
            "Delay from an event's occurrence to a handler of this process starting on it",
            ["service"],
            registry=self.registry,
            buckets=LAG_BUCKETS,
        )
        self.handled = Counter(
            "crm_events_handled", "Event handler runs", ["service", "outcome"], registry=self.registry
        )
        self.rpc = Counter(
            "crm_rpc_requests", "RPC requests this process answered", ["service"], registry=self.registry
        )
        self.outbox = Gauge(
            "crm_outbox_backlog", "Outbox documents not yet published", ["service"], registry=self.registry
        )
        self.dead_letters = Gauge(
            "crm_dead_letters", "Messages in the dead-letter queue", registry=self.registry
        )
        self.hook_accept = Histogram(
            "crm_hook_accept_seconds",
            "Time to answer an inbound hook at the connectors' ingress",
            ["status"],
            registry=self.registry,
            buckets=ACCEPT_BUCKETS,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def instrument(self, hub: Hub) -> None:
        """Wrap every event handler (lag, outcome) and RPC method (count) of the hub's services,
        before ``hub.start``."""
        for svc in hub.services.values():
            for rk, handler in list(svc.events.handlers.items()):
                svc.events.handlers[rk] = self._timed(svc.name, handler, hub)
            for name, method in list(svc.rpc.methods.items()):
                svc.rpc.methods[name] = self._counted(svc.name, method)

    def _counted(self, service: str, method: RpcMethod) -> RpcMethod:
        counter = self.rpc.labels(service)

        async def counted(ctx: dict[str, Any], args: dict[str, Any]) -> Any:
            counter.inc()
            return await method(ctx, args)

        return counted

    def _timed(
        self, service: str, handler: Callable[[Envelope], Awaitable[None]], hub: Hub
    ) -> Callable[[Envelope], Awaitable[None]]:
        lag = self.event_lag.labels(service)
        ok, error = self.handled.labels(service, "ok"), self.handled.labels(service, "error")
        clock = hub.runtime.clock

        async def timed(env: Envelope) -> None:
            lag.observe(max(0.0, (clock.now() - env.occurred_at).total_seconds()))
            try:
                await handler(env)
            except BaseException:
                error.inc()
                raise
            ok.inc()

        return timed

    async def refresh(self, hub: Hub) -> None:
        """Read the gauges that are counted at scrape time (broker queue depths, outbox size).
        A dependency that does not answer leaves the previous value: the metrics still render."""
        rt = hub.runtime
        queues = [rt.topology.service_queue(name) for name, s in hub.services.items() if s.events.handlers]
        depths = await asyncio.gather(
            *(queue_depth(hub, q) for q in [*queues, rt.topology.dead_letters]), return_exceptions=True
        )
        for name, depth in zip([*queues, rt.topology.dead_letters], depths, strict=True):
            if isinstance(depth, int):
                if name == rt.topology.dead_letters:
                    self.dead_letters.set(depth)
                else:
                    self.queue_messages.labels(name).set(depth)
        for svc in hub.services.values():
            try:
                count = await asyncio.wait_for(svc.db.outbox.estimated_document_count(), 2.0)
            except Exception:
                log.debug("outbox not counted", exc_info=True)
                continue
            self.outbox.labels(svc.name).set(count)


async def queue_depth(hub: Hub, name: str) -> int | None:
    """Messages ready in a queue (a passive declare on a throwaway channel), ``None`` if unknown."""
    conn = hub.runtime.bus.conn
    if conn is None or conn.is_closed:
        return None
    ch = await asyncio.wait_for(conn.channel(), 2.0)
    try:
        queue = await asyncio.wait_for(ch.declare_queue(name, passive=True), 2.0)
        return int(queue.declaration_result.message_count or 0)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await ch.close()


class HookTiming:
    """ASGI middleware of the connectors' ingress: the accept latency of every hook."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = [500]

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.hook_accept.labels(str(status[0])).observe(time.perf_counter() - started)
