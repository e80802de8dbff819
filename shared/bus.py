"""The broker topology and the three ways services use it: events, hook hand-off, request/reply.

- One durable topic exchange ``<ns>.events``; routing key ``<aggregate>.<verb>.v<N>``.
- One quorum queue per consumer and routing key, ``<ns>.<consumer>.<routing key>``, with a delivery
  limit: a handler that keeps failing sends the message to ``<ns>.dead-letter`` (queue
  ``<ns>.dead-letters``) instead of blocking the queue forever.
- Messages are persistent and every publish waits for the broker's confirm.
- RPC: one queue per service ``<ns>.rpc.<service>``; replies to a per-client queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from faststream import AckPolicy
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitMessage,
    RabbitQueue,
    RabbitRouter,
)
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from shared.errors import AppError, ServiceUnavailable, Timeout
from shared.events import Envelope

log = logging.getLogger(__name__)

EventHandler = Callable[[Envelope], Awaitable[None]]
RpcMethod = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]


class Topology:
    """Names of everything this hub declares on the broker, all under ``namespace``."""

    def __init__(self, namespace: str, retry_limit: int = 5) -> None:
        self.ns = namespace
        self.retry_limit = retry_limit
        self.events = RabbitExchange(f"{namespace}.events", type=ExchangeType.TOPIC, durable=True)
        self.dead_letter = RabbitExchange(f"{namespace}.dead-letter", type=ExchangeType.TOPIC, durable=True)
        self.dead_letters = RabbitQueue(
            f"{namespace}.dead-letters",
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key="#",
        )

    def event_queue(self, consumer: str, routing_key: str) -> RabbitQueue:
        return RabbitQueue(
            f"{self.ns}.{consumer}.{routing_key}",
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=routing_key,
            arguments={
                "x-delivery-limit": self.retry_limit,
                "x-dead-letter-exchange": self.dead_letter.name,
            },
        )

    def rpc_queue_name(self, service: str) -> str:
        return f"{self.ns}.rpc.{service}"

    def rpc_queue(self, service: str) -> RabbitQueue:
        return RabbitQueue(self.rpc_queue_name(service), durable=True)


def make_broker(rabbit_url: str) -> RabbitBroker:
    return RabbitBroker(
        rabbit_url,
        default_channel=Channel(prefetch_count=32, on_return_raises=True),
        logger=logging.getLogger("crm.bus"),
        log_level=logging.DEBUG,
        graceful_timeout=10.0,
        reconnect_interval=2.0,
    )


async def declare_topology(broker: RabbitBroker, topology: Topology) -> None:
    await broker.declare_exchange(topology.events)
    await broker.declare_exchange(topology.dead_letter)
    queue = await broker.declare_queue(topology.dead_letters)
    await queue.bind(topology.dead_letter.name, routing_key="#")


class EventPublisher:
    """Publishes envelopes persistently and waits for the broker's confirm."""

    def __init__(self, broker: RabbitBroker, topology: Topology) -> None:
        self._broker = broker
        self._topology = topology

    async def publish(self, env: Envelope, *, mandatory: bool = False) -> None:
        await self._broker.publish(
            env.model_dump(mode="json"),
            exchange=self._topology.events,
            routing_key=env.routing_key,
            persist=True,
            mandatory=mandatory,
            message_id=env.event_id,
            correlation_id=env.correlation_id,
            message_type=env.event_type,
            headers={"tenant_id": env.tenant_id, "producer": env.producer},
            timeout=10,
        )


def subscribe_event(
    router: RabbitRouter,
    topology: Topology,
    consumer: str,
    routing_key: str,
    handler: EventHandler,
) -> None:
    """Bind ``handler`` to its own durable queue. A malformed envelope goes straight to the
    dead-letter queue; a handler error is retried (with a short pause) up to the delivery limit."""

    async def _consume(body: Any, message: RabbitMessage) -> None:
        try:
            env = Envelope.model_validate(body if isinstance(body, dict) else json.loads(body))
        except (ValidationError, ValueError, TypeError):
            log.error("malformed envelope dead-lettered", extra={"queue": consumer, "rk": routing_key})
            await message.reject(requeue=False)
            return
        try:
            await handler(env)
        except Exception:
            attempt = int((message.headers or {}).get("x-delivery-count") or 0)
            log.exception(
                "event handler failed",
                extra={"consumer": consumer, "event_id": env.event_id, "attempt": attempt + 1},
            )
            await asyncio.sleep(min(0.2 * 2**attempt, 3.0))
            raise

    _consume.__name__ = f"{consumer}:{routing_key}"
    router.subscriber(
        topology.event_queue(consumer, routing_key),
        topology.events,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"{consumer}:{routing_key}",
    )(_consume)


# ---- request/reply ----------------------------------------------------------------------------


class RpcServer:
    """A service's request/reply endpoint: ``{"method", "ctx", "args"}`` → ``{"ok", ...}``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.methods: dict[str, RpcMethod] = {}

    def method(self, name: str) -> Callable[[RpcMethod], RpcMethod]:
        def deco(fn: RpcMethod) -> RpcMethod:
            self.methods[name] = fn
            return fn

        return deco

    async def dispatch(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("method", "")
        fn = self.methods.get(name)
        if fn is None:
            return {"ok": False, "error": AppError(f"unknown method {name}", status=500).to_wire()}
        try:
            result = await fn(body.get("ctx") or {}, body.get("args") or {})
        except AppError as exc:
            return {"ok": False, "error": exc.to_wire()}
        except Exception:
            log.exception("rpc method failed", extra={"service": self.service, "method": name})
            return {"ok": False, "error": AppError("internal error", status=500, code="internal").to_wire()}
        return {"ok": True, "result": to_jsonable_python(result)}

    def attach(self, router: RabbitRouter, topology: Topology) -> None:
        async def _rpc(body: dict[str, Any]) -> dict[str, Any]:
            return await self.dispatch(body)

        _rpc.__name__ = f"rpc:{self.service}"
        router.subscriber(topology.rpc_queue(self.service), ack_policy=AckPolicy.ACK_FIRST)(_rpc)


class RpcClient:
    """Calls services over RabbitMQ. Many calls in flight at once; each has a timeout."""

    def __init__(self, rabbit_url: str, topology: Topology, timeout_s: float = 10.0) -> None:
        self._url = rabbit_url
        self._topology = topology
        self._timeout = timeout_s
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._reply_to = f"{topology.ns}.rpc-reply.{uuid.uuid4().hex}"

    async def start(self) -> None:
        self._conn = await aio_pika.connect_robust(self._url, reconnect_interval=2)
        self._channel = await self._conn.channel(publisher_confirms=False)
        queue = await self._channel.declare_queue(self._reply_to, exclusive=True, auto_delete=True)
        await queue.consume(self._on_reply, no_ack=True)

    async def stop(self) -> None:
        for fut in self._pending.values():
            fut.cancel()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        fut = self._pending.pop(message.correlation_id or "", None)
        if fut is not None and not fut.done():
            try:
                fut.set_result(json.loads(message.body))
            except ValueError:
                fut.set_exception(AppError("malformed reply", status=502, code="bad_gateway"))

    async def call(
        self, service: str, method: str, ctx: dict[str, Any], timeout: float | None = None, **args: Any
    ) -> Any:
        if self._channel is None:
            raise ServiceUnavailable("The message broker is not connected.")
        timeout = timeout or self._timeout
        corr = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        body = json.dumps(
            {"method": method, "ctx": ctx, "args": to_jsonable_python(args)}, ensure_ascii=False
        ).encode()
        try:
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    correlation_id=corr,
                    reply_to=self._reply_to,
                    expiration=timeout,
                ),
                routing_key=self._topology.rpc_queue_name(service),
            )
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            raise Timeout(f"The {service} service did not answer within {timeout:g} s.") from exc
        finally:
            self._pending.pop(corr, None)
        if reply.get("ok"):
            return reply.get("result")
        raise AppError.from_wire(reply.get("error") or {})
