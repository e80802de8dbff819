"""The broker topology and the three ways services use it: events, hook hand-off, request/reply.

Everything an installation declares lives under its namespace ``<ns>`` (see :class:`Topology`):

- ``<ns>.events``: durable topic exchange of the public events (``contact.*``, ``deal.*``,
  ``task.*``, ``inbox.*``, ``message.*``, ``interaction.recorded``), routing key
  ``<aggregate>.<verb>.v<N>``. The gateway's live stream and outbound webhooks read only this one.
- ``<ns>.internal``: durable topic exchange of the hand-offs between services (``hook.received``,
  ``mail.received``, ``interaction.captured``, ``rule.*``, settings and user changes...): raw
  requests and channel data never reach an exchange the gateway listens to.
- One durable queue per consuming service, ``<ns>.<service>``, bound to every routing key the
  service handles on either exchange; the service dispatches by the envelope's own type. Type from
  ``CRM_QUEUE_TYPE`` (``quorum`` or ``classic``). A message whose handler keeps failing is retried
  ``retry_limit`` times (quorum: the broker's ``x-delivery-limit``; classic: an attempt header,
  counted by the consumer) and then dead-lettered to ``<ns>.dead-letter`` → ``<ns>.dead-letters``.
- RPC: one queue per service ``<ns>.rpc.<service>``; replies to a per-client exclusive queue.

Messages are persistent and every publish waits for the broker's confirm. Every step that talks to
the broker has a time limit (``CRM_BROKER_TIMEOUT_S``): a broker that accepts TCP but never
answers makes start-up fail with :class:`BrokerUnreachable` naming the URL and the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from shared.errors import AppError, ServiceUnavailable, Timeout
from shared.events import Envelope, is_public

log = logging.getLogger(__name__)

QueueType = Literal["quorum", "classic"]
EventHandler = Callable[[Envelope], Awaitable[None]]
RpcMethod = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]
READY_METHOD = "__ready__"
"""Every RPC endpoint answers it with whether its service has started (``/ready`` of a gateway
whose services run in other processes)."""
ATTEMPT_HEADER = "x-crm-attempt"
"""Classic queues have no delivery limit: the consumer counts failed attempts in this header."""


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class BrokerUnreachable(RuntimeError):
    """The broker refused, or did not answer a step of start-up in time."""


class Topology:
    """Names and arguments of everything an installation declares, all under ``namespace``."""

    def __init__(self, namespace: str, retry_limit: int = 5, queue_type: QueueType = "quorum") -> None:
        self.ns = namespace
        self.retry_limit = retry_limit
        self.queue_type: QueueType = queue_type
        self.events = f"{namespace}.events"
        self.internal = f"{namespace}.internal"
        self.dead_letter = f"{namespace}.dead-letter"
        self.dead_letters = f"{namespace}.dead-letters"

    def exchange_for(self, event_type: str) -> str:
        return self.events if is_public(event_type) else self.internal

    def service_queue(self, service: str) -> str:
        return f"{self.ns}.{service}"

    def queue_arguments(self, *, dead_letter: bool = True) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": self.queue_type}
        if dead_letter:
            args["x-dead-letter-exchange"] = self.dead_letter
            if self.queue_type == "quorum":
                args["x-delivery-limit"] = self.retry_limit
        return args

    def rpc_queue_name(self, service: str) -> str:
        return f"{self.ns}.rpc.{service}"

    def durable_queues(self, services: Iterable[str], rpc_services: Iterable[str]) -> list[str]:
        """Every durable queue of an installation hosting these services (for listings and drops)."""
        return [
            *(self.service_queue(s) for s in services),
            self.dead_letters,
            *(self.rpc_queue_name(s) for s in rpc_services),
        ]


# ---- connection -----------------------------------------------------------------------------


async def _bounded(what: str, url: str, timeout_s: float, aw: Awaitable[Any]) -> Any:
    try:
        return await asyncio.wait_for(aw, timeout_s)
    except TimeoutError as exc:
        raise BrokerUnreachable(
            f"RabbitMQ at {redact_url(url)} did not answer {what} within {timeout_s:g} s "
            "(CRM_BROKER_TIMEOUT_S). Is it running and healthy (`rabbitmqctl status`)?"
        ) from exc
    except (OSError, aio_pika.exceptions.AMQPError, ConnectionError) as exc:
        raise BrokerUnreachable(
            f"RabbitMQ is not reachable at {redact_url(url)} ({what}: {exc!r}). "
            "Start it with `rabbitmq-server -detached` (or set CRM_RABBIT_URL)."
        ) from exc


class Bus:
    """One robust AMQP connection per process: a confirming publish channel, consumers, RPC."""

    def __init__(self, url: str, topology: Topology, timeout_s: float = 30.0) -> None:
        self.url = url
        self.topology = topology
        self.timeout_s = timeout_s
        self.conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.is_closed

    async def connect(self) -> None:
        self.conn = await _bounded(
            "the AMQP handshake",
            self.url,
            self.timeout_s,
            aio_pika.connect_robust(self.url, reconnect_interval=2, timeout=self.timeout_s),
        )
        self._pub = await self.step("opening a channel", self.conn.channel(publisher_confirms=True))

    async def step(self, what: str, aw: Awaitable[Any]) -> Any:
        """Await one broker operation within the start-up time limit."""
        return await _bounded(what, self.url, self.timeout_s, aw)

    async def channel(self, prefetch: int | None = None) -> AbstractChannel:
        assert self.conn is not None, "connect() first"
        ch: AbstractChannel = await self.step("opening a channel", self.conn.channel())
        if prefetch:
            await self.step("setting the prefetch window", ch.set_qos(prefetch_count=prefetch))
        return ch

    async def declare_topology(self) -> None:
        t = self.topology
        ch = self._pub
        assert ch is not None
        for name in (t.events, t.internal, t.dead_letter):
            self._exchanges[name] = await self.step(
                f"declaring exchange {name}",
                ch.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True),
            )
        dlq = await self.declare_queue(t.dead_letters, dead_letter=False)
        await self.step("binding the dead-letter queue", dlq.bind(t.dead_letter, routing_key="#"))

    async def declare_queue(
        self, name: str, *, dead_letter: bool = True, channel: AbstractChannel | None = None
    ) -> AbstractQueue:
        """A durable queue of the installation's type; an existing queue is used as it is (a
        queue declared with another type or arguments before keeps them: no redeclare error)."""
        assert self.conn is not None
        exists = await self.queue_exists(name)
        ch = channel or self._pub
        assert ch is not None
        if exists:
            return await self.step(f"opening queue {name}", ch.declare_queue(name, passive=True))
        return await self.step(
            f"declaring queue {name}",
            ch.declare_queue(
                name, durable=True, arguments=self.topology.queue_arguments(dead_letter=dead_letter)
            ),
        )

    async def queue_exists(self, name: str) -> bool:
        """A passive declare on a throwaway channel (a missing queue closes the channel)."""
        assert self.conn is not None
        probe = await self.step("opening a channel", self.conn.channel())
        try:
            await asyncio.wait_for(probe.declare_queue(name, passive=True), self.timeout_s)
            return True
        except (aio_pika.exceptions.ChannelClosed, aio_pika.exceptions.ChannelNotFoundEntity):
            return False
        except TimeoutError as exc:
            raise BrokerUnreachable(
                f"RabbitMQ at {redact_url(self.url)} did not answer looking up queue {name} "
                f"within {self.timeout_s:g} s (CRM_BROKER_TIMEOUT_S)."
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                await probe.close()

    async def exchange(self, name: str) -> AbstractExchange:
        if name not in self._exchanges:
            assert self._pub is not None
            self._exchanges[name] = await self._pub.get_exchange(name, ensure=False)
        return self._exchanges[name]

    async def publish(self, env: Envelope, *, mandatory: bool = False) -> None:
        """Publish persistently to the event's exchange and wait for the broker's confirm."""
        if self._pub is None:
            raise ServiceUnavailable("The message broker is not connected.")
        exchange = await self.exchange(self.topology.exchange_for(env.event_type))
        await exchange.publish(_message(env), routing_key=env.routing_key, mandatory=mandatory, timeout=10)

    async def send_to_queue(self, queue: str, message: aio_pika.Message) -> None:
        """Publish straight into one queue (retries and migration), persistent, confirmed."""
        if self._pub is None:
            raise ServiceUnavailable("The message broker is not connected.")
        await self._pub.default_exchange.publish(message, routing_key=queue, mandatory=True, timeout=10)

    async def ping(self, timeout: float = 2.0) -> bool:
        if not self.connected or self._pub is None or self._pub.is_closed:
            return False
        try:
            ch = await asyncio.wait_for(self.conn.channel(), timeout)  # type: ignore[union-attr]
            await ch.close()
            return True
        except Exception:
            return False

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 5)
            self.conn = None
            self._pub = None
            self._exchanges.clear()


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _message(env: Envelope) -> aio_pika.Message:
    return aio_pika.Message(
        env.model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=env.event_id,
        correlation_id=env.correlation_id,
        type=env.event_type,
        headers={"tenant_id": env.tenant_id, "producer": env.producer},
    )


class EventPublisher:
    """What stores and ingresses publish through (persistent, confirmed)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def publish(self, env: Envelope, *, mandatory: bool = False) -> None:
        await self._bus.publish(env, mandatory=mandatory)


# ---- consuming ------------------------------------------------------------------------------


@dataclass
class Subscription:
    """A service's handlers by routing key (``contact.created.v1``; ``#``: every public event)."""

    service: str
    handlers: dict[str, EventHandler] = field(default_factory=dict)


class ServiceConsumer:
    """Consumes a service's one queue and dispatches each event to its handler.

    Events run in ``lanes`` by tenant: one tenant's events are handled in order, different tenants
    at once. A failing handler's message waits ``backoff`` (off the lane) and is delivered again,
    at most ``retry_limit`` times, then dead-lettered. A malformed envelope is dead-lettered at
    once; an event type the service does not handle is acknowledged and ignored."""

    def __init__(
        self,
        bus: Bus,
        subscription: Subscription,
        *,
        prefetch: int = 64,
        lanes: int = 8,
        backoff_s: Callable[[int], float] | None = None,
        batch: Callable[[], AbstractAsyncContextManager[None]] | None = None,
        batch_max: int = 100,
        unavailable: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.bus = bus
        self.sub = subscription
        self.queue_name = bus.topology.service_queue(subscription.service)
        self.prefetch = prefetch
        self._lanes: list[asyncio.Queue[AbstractIncomingMessage]] = [asyncio.Queue() for _ in range(lanes)]
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._channel: AbstractChannel | None = None
        self._tag: str | None = None
        self._queue: AbstractQueue | None = None
        self.backoff_s = backoff_s or (lambda attempt: min(0.2 * 2**attempt, 3.0))
        self.batch = batch
        self.batch_max = batch_max
        self.unavailable = unavailable
        """Whether an error means a dependency is down (then the event waits instead of failing)."""
        self.batches = 0
        """Batches committed (the tests read it)."""

    async def declare(self) -> None:
        """The queue and its bindings (idempotent)."""
        t = self.bus.topology
        self._channel = await self.bus.channel(self.prefetch)
        self._queue = await self.bus.declare_queue(self.queue_name, channel=self._channel)
        for rk in sorted(self.sub.handlers):
            exchange = t.events if rk == "#" else t.exchange_for(rk.rsplit(".v", 1)[0])
            await self.bus.step(
                f"binding {self.queue_name} to {rk}", self._queue.bind(exchange, routing_key=rk)
            )

    async def start(self) -> None:
        if self._queue is None:
            await self.declare()
        assert self._queue is not None
        self._tasks = [
            asyncio.create_task(self._lane(q), name=f"consume:{self.queue_name}:{i}")
            for i, q in enumerate(self._lanes)
        ]
        self._tag = await self.bus.step(f"consuming {self.queue_name}", self._queue.consume(self._on_message))

    async def stop(self) -> None:
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._queue.cancel(self._tag), 3)
        for task in [*self._tasks, *self._pending]:
            task.cancel()
        for task in [*self._tasks, *self._pending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), 3)
        self._channel = None
        self._queue = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        tenant = str((message.headers or {}).get("tenant_id") or "")
        self._lanes[zlib.crc32(tenant.encode()) % len(self._lanes)].put_nowait(message)

    def attempts(self, message: AbstractIncomingMessage) -> int:
        """Deliveries of this message so far that failed (0 on the first one)."""
        headers = message.headers or {}
        return max(_count(headers.get("x-delivery-count")), _count(headers.get(ATTEMPT_HEADER)))

    async def _lane(self, queue: asyncio.Queue[AbstractIncomingMessage]) -> None:
        """Take what the lane holds (up to ``batch_max``) and handle it as one batch."""
        while True:
            messages = [await queue.get()]
            while len(messages) < self.batch_max and not queue.empty():
                messages.append(queue.get_nowait())
            try:
                await self._handle_batch(messages)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer lane error", extra={"queue": self.queue_name})

    async def _handle_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        """Several events in the service's one transaction (``batch``); when anything in it fails,
        every event is handled again alone, with its own retries and dead-lettering."""
        if self.batch is None or len(messages) == 1:
            for message in messages:
                await self._handle(message)
            return
        ready: list[tuple[AbstractIncomingMessage, Envelope, EventHandler]] = []
        for message in messages:
            parsed = self._parse(message)
            if parsed is None:
                await self._handle(message)  # crash redelivery, malformed, not ours: the single path
            else:
                ready.append((message, *parsed))
        if not ready:
            return
        failed: int | None = None
        error: BaseException | None = None
        pause = 0.5
        while True:
            try:
                async with self.batch():
                    for i, (_, env, handler) in enumerate(ready):
                        failed = i
                        await handler(env)
                    failed = None  # the commit itself may still fail: then no event is to blame
            except Exception as exc:
                if self._unreachable(exc):
                    pause = await self._wait_for_dependency(pause)
                    continue  # the same batch again, once the database answers
                error = exc
                break
            failed = -1  # done
            break
        if failed != -1:
            log.info(
                "batch rolled back; its events are handled one by one",
                extra={"queue": self.queue_name, "size": len(ready)},
            )
            for i, (message, env, _) in enumerate(ready):
                if i == failed:  # its handler failed: that was an attempt
                    attempt = self.attempts(message)
                    log.warning(
                        "event handler failed",
                        exc_info=error,
                        extra={"queue": self.queue_name, "event_id": env.event_id, "attempt": attempt + 1},
                    )
                    await self._retry(message, attempt, delay_s=self.backoff_s(attempt))
                else:
                    await self._handle(message)
            return
        self.batches += 1
        for message, _, _ in ready:
            await message.ack()

    def _unreachable(self, exc: BaseException) -> bool:
        return self.unavailable is not None and self.unavailable(exc)

    async def _wait_for_dependency(self, pause: float) -> float:
        """A dependency (the database) is unreachable: wait, then try the same events again. The
        events stay unacknowledged meanwhile and their retry budget is left alone, so an outage
        of any length dead-letters nothing."""
        log.warning(
            "the database is unreachable; events wait", extra={"queue": self.queue_name, "pause_s": pause}
        )
        await asyncio.sleep(pause)
        return min(pause * 2, 5.0)

    def _parse(self, message: AbstractIncomingMessage) -> tuple[Envelope, EventHandler] | None:
        """The event and its handler, when this delivery can go into a batch."""
        if self._uncounted_redelivery(message):
            return None
        try:
            env = Envelope.model_validate_json(message.body)
        except (ValidationError, ValueError):
            return None
        handler = self._handler_for(env)
        return None if handler is None else (env, handler)

    @staticmethod
    def _uncounted_redelivery(message: AbstractIncomingMessage) -> bool:
        """Redelivered (a consumer died holding it) by a queue that does not count deliveries."""
        return bool(message.redelivered) and "x-delivery-count" not in (message.headers or {})

    def _handler_for(self, env: Envelope) -> EventHandler | None:
        """The handler of the event's routing key, else the service's ``#`` one for a public event."""
        handler = self.sub.handlers.get(env.routing_key)
        if handler is None and is_public(env.event_type):
            handler = self.sub.handlers.get("#")
        return handler

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        if self._uncounted_redelivery(message):
            # A classic queue redelivers after a crash without counting: count it here, so a
            # message that kills its consumer every time still ends in the dead-letter queue.
            await self._retry(message, self.attempts(message), delay_s=0.0)
            return
        try:
            env = Envelope.model_validate_json(message.body)
        except (ValidationError, ValueError):
            log.error("malformed envelope dead-lettered", extra={"queue": self.queue_name})
            await message.reject(requeue=False)
            return
        handler = self._handler_for(env)
        if handler is None:
            await message.ack()
            return
        pause = 0.5
        while True:
            try:
                await handler(env)
                break
            except Exception as exc:
                if self._unreachable(exc):
                    pause = await self._wait_for_dependency(pause)
                    continue  # an outage is not the event's attempt: it waits, unacknowledged
                attempt = self.attempts(message)
                log.exception(
                    "event handler failed",
                    extra={"queue": self.queue_name, "event_id": env.event_id, "attempt": attempt + 1},
                )
                await self._retry(message, attempt, delay_s=self.backoff_s(attempt))
                return
        await message.ack()

    async def _retry(self, message: AbstractIncomingMessage, attempt: int, *, delay_s: float) -> None:
        """Deliver again after ``delay_s`` (off the lane), or dead-letter once the limit is reached.

        The copy carries the attempt count in :data:`ATTEMPT_HEADER` and is confirmed before the
        original is acknowledged (a crash in between leaves two copies: consumers are idempotent).
        The same on both queue types; a quorum queue's own delivery limit also bounds the
        redeliveries that follow crashes."""
        if attempt >= self.bus.topology.retry_limit:
            await message.reject(requeue=False)
            return
        if delay_s <= 0:
            await self._redeliver(message, attempt + 1)
            return
        task = asyncio.create_task(self._redeliver(message, attempt + 1, delay_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _redeliver(self, message: AbstractIncomingMessage, attempt: int, delay_s: float = 0.0) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        copy = aio_pika.Message(
            message.body,
            headers={**(message.headers or {}), ATTEMPT_HEADER: attempt},
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
        )
        copy.headers.pop("x-delivery-count", None)
        try:
            await self.bus.send_to_queue(self.queue_name, copy)
            await message.ack()
        except Exception:
            log.warning("redelivery failed; the broker will redeliver", extra={"queue": self.queue_name})


# ---- request/reply ----------------------------------------------------------------------------


class RpcServer:
    """A service's request/reply endpoint: ``{"method", "ctx", "args"}`` → ``{"ok", ...}``."""

    def __init__(self, service: str, concurrency: int = 32) -> None:
        self.service = service
        self.methods: dict[str, RpcMethod] = {}
        self.concurrency = concurrency
        self.ready: Callable[[], bool] = lambda: True
        self.unavailable: Callable[[BaseException], bool] = lambda exc: False
        """Whether an error means a dependency is down (answered 503, not 500)."""
        """Whether the service has started (the answer to ``READY_METHOD``)."""
        self._channel: AbstractChannel | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def method(self, name: str) -> Callable[[RpcMethod], RpcMethod]:
        def deco(fn: RpcMethod) -> RpcMethod:
            self.methods[name] = fn
            return fn

        return deco

    async def dispatch(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("method", "")
        if name == READY_METHOD:
            return {"ok": True, "result": bool(self.ready())}
        fn = self.methods.get(name)
        if fn is None:
            return {"ok": False, "error": AppError(f"unknown method {name}", status=500).to_wire()}
        try:
            result = await fn(body.get("ctx") or {}, body.get("args") or {})
        except AppError as exc:
            return {"ok": False, "error": exc.to_wire()}
        except Exception as exc:
            if self.unavailable(exc):
                log.warning(
                    "rpc method: the database is unreachable", extra={"service": self.service, "method": name}
                )
                err = ServiceUnavailable(
                    "The database is unreachable; retry later.", headers={"Retry-After": "5"}
                )
                return {"ok": False, "error": err.to_wire()}
            log.exception("rpc method failed", extra={"service": self.service, "method": name})
            return {"ok": False, "error": AppError("internal error", status=500, code="internal").to_wire()}
        return {"ok": True, "result": to_jsonable_python(result)}

    async def start(self, bus: Bus) -> None:
        self._channel = await bus.channel(self.concurrency)
        name = bus.topology.rpc_queue_name(self.service)
        queue = await bus.step(f"declaring queue {name}", self._channel.declare_queue(name, durable=True))
        await bus.step(f"consuming {name}", queue.consume(self._on_request, no_ack=True))

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._answer(message))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
        except ValueError:
            return
        reply = await self.dispatch(body)
        if not message.reply_to or self._channel is None:
            return
        with contextlib.suppress(Exception):
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(reply, ensure_ascii=False).encode(),
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                ),
                routing_key=message.reply_to,
            )

    async def stop(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), 3)
            self._channel = None


class RpcClient:
    """Calls services over RabbitMQ. Many calls in flight at once; each has a timeout."""

    def __init__(self, rabbit_url: str, topology: Topology, timeout_s: float = 10.0) -> None:
        self._url = rabbit_url
        self._topology = topology
        self._timeout = timeout_s
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._conn: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._reply_to = f"{topology.ns}.rpc-reply.{uuid.uuid4().hex}"

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed

    async def start(self, timeout_s: float = 30.0) -> None:
        self._conn = await _bounded(
            "the AMQP handshake (RPC client)",
            self._url,
            timeout_s,
            aio_pika.connect_robust(self._url, reconnect_interval=2, timeout=timeout_s),
        )
        self._channel = await _bounded("opening a channel", self._url, timeout_s, self._conn.channel())
        queue = await _bounded(
            "declaring the reply queue",
            self._url,
            timeout_s,
            self._channel.declare_queue(self._reply_to, exclusive=True, auto_delete=True),
        )
        await queue.consume(self._on_reply, no_ack=True)

    async def stop(self) -> None:
        for fut in self._pending.values():
            fut.cancel()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 5)
            self._conn = None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
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


# ---- administration -------------------------------------------------------------------------


async def drop_namespace(
    url: str, topology: Topology, queues: Sequence[str], timeout_s: float = 30.0
) -> list[str]:
    """Delete an installation's queues and exchanges (``crm broker drop``); returns what went."""
    conn = await _bounded("the AMQP handshake", url, timeout_s, aio_pika.connect(url, timeout=timeout_s))
    dropped: list[str] = []
    async with conn:
        for name in queues:
            ch = await conn.channel()
            try:
                await asyncio.wait_for(ch.declare_queue(name, passive=True), timeout_s)
                await asyncio.wait_for(ch.queue_delete(name), timeout_s)
                dropped.append(name)
            except (aio_pika.exceptions.ChannelClosed, aio_pika.exceptions.ChannelNotFoundEntity):
                pass  # never declared
            finally:
                with contextlib.suppress(Exception):
                    await ch.close()
        for name in (topology.events, topology.internal, topology.dead_letter):
            ch = await conn.channel()
            try:
                await asyncio.wait_for(ch.exchange_delete(name), timeout_s)
                dropped.append(name)
            except aio_pika.exceptions.AMQPError:
                pass
            finally:
                with contextlib.suppress(Exception):
                    await ch.close()
    return dropped


async def migrate_queue(bus: Bus, old: str, new: str, *, exchange: str, routing_key: str) -> int:
    """Move every message waiting in ``old`` (a queue of the layout before one queue per service,
    bound to ``routing_key`` on ``exchange``) into ``new``, each confirmed before its ack; then
    delete ``old``. It is unbound first, so nothing arrives while it drains; a queue that does not
    exist moves nothing."""
    assert bus.conn is not None
    if not await bus.queue_exists(old):
        return 0
    ch = await bus.step("opening a channel", bus.conn.channel())
    moved = 0
    try:
        unbind = await bus.step("opening a channel", bus.conn.channel())
        try:
            target = await unbind.get_queue(old, ensure=False)
            await bus.step(f"unbinding {old}", target.unbind(exchange, routing_key))
        except BrokerUnreachable:
            raise
        except aio_pika.exceptions.AMQPError:
            pass
        finally:
            with contextlib.suppress(Exception):
                await unbind.close()
        queue = await bus.step(f"opening queue {old}", ch.declare_queue(old, passive=True))
        while True:
            message = await bus.step(f"reading {old}", queue.get(no_ack=False, fail=False))
            if message is None:
                break
            headers = dict(message.headers or {})
            headers.pop("x-delivery-count", None)
            copy = aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                type=message.type,
            )
            await bus.send_to_queue(new, copy)
            await message.ack()
            moved += 1
        # A quorum queue counts the reader of a basic.get as a consumer for a moment; a consumer
        # that stays is a process of the old layout still at work: its queue is left to it.
        for _ in range(30):
            probe = await bus.step("opening a channel", bus.conn.channel())
            try:  # a fresh channel each time: a channel caches its own declare answers
                left = await bus.step(f"counting {old}", probe.declare_queue(old, passive=True))
                result = left.declaration_result
                if result.message_count == 0 and result.consumer_count == 0:
                    await bus.step(f"deleting {old}", probe.queue_delete(old))
                    break
            finally:
                with contextlib.suppress(Exception):
                    await probe.close()
            await asyncio.sleep(0.1)
    finally:
        with contextlib.suppress(Exception):
            await ch.close()
    return moved
