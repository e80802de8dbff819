"""What every service is made of: its event table, its own store, an RPC endpoint, a lifecycle.

A service subclass registers its event handlers (``self.on``) and RPC methods (``self.serve``, or
untyped ``self.rpc.method``) in ``setup()`` and may add background work in ``on_start()``.
``self.on(PayloadType, fn)`` decodes and validates the payload before ``fn(env, payload)`` sees
it; ``self.serve(RequestType, fn)`` does the same for an RPC request (a request that does not fit
its model is a 422 naming the fields). The same class runs alone
(``crm run contacts``) or beside the others in one process (``crm run all``); only the process
boundary differs. Its events arrive on one queue, ``<ns>.<service>``, bound to every routing key
of its table (:class:`shared.bus.ServiceConsumer`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, overload

from pydantic import BaseModel, ValidationError
from pymongo import AsyncMongoClient

from shared.bus import Bus, EventHandler, EventPublisher, RpcServer, Subscription, Topology
from shared.clock import Clock
from shared.contract import RpcRequest, problems
from shared.crypto import SecretBox
from shared.errors import ValidationFailed
from shared.events import Envelope, event_types_of
from shared.mongo import Indexes, Store
from shared.settings import Settings

log = logging.getLogger(__name__)
P = TypeVar("P", bound=BaseModel)
Q = TypeVar("Q", bound=RpcRequest)


@dataclass
class Runtime:
    """The clients a service is given; opened once per process by the hub runner."""

    settings: Settings
    bus: Bus
    topology: Topology
    mongo: AsyncMongoClient[dict[str, Any]]
    publisher: EventPublisher
    clock: Clock
    secrets: SecretBox


def envelope_only(handler: EventHandler) -> Callable[[Envelope, Any], Awaitable[None]]:
    """For :meth:`Service.on` by payload type: a handler that still reads ``env.payload`` runs
    after the payload was validated against its schema."""

    async def run(env: Envelope, _payload: Any) -> None:
        await handler(env)

    return run


def as_arguments(
    method: Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]],
) -> Callable[[dict[str, Any], RpcRequest], Awaitable[Any]]:
    """For :meth:`Service.serve`: a handler that reads its arguments as a dict gets the validated
    request's fields (those the caller set), as they went over the wire."""

    async def run(ctx: dict[str, Any], req: RpcRequest) -> Any:
        return await method(ctx, req.model_dump(mode="json", exclude_unset=True, by_alias=True))

    return run


class Service:
    name: ClassVar[str] = "service"
    indexes: ClassVar[Indexes] = {}

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.clock = rt.clock
        self.events = Subscription(self.name)
        self.legacy_queues: list[tuple[str, str]] = []
        """Queues of the layout before one queue per service (``<ns>.<consumer>.<routing key>``):
        ``(queue, routing key)``: what waits in them is moved to this service's queue on start."""
        self.rpc = RpcServer(self.name)
        self.rpc.ready = lambda: self.started
        self.store = Store(
            rt.mongo,
            rt.settings.db_name(self.name),
            producer=self.name,
            publish=rt.publisher.publish,
            clock=rt.clock,
        )
        self.started = False
        self.setup()

    @property
    def db(self) -> Any:
        return self.store.db

    def setup(self) -> None:
        """Register event handlers (``self.on``) and RPC methods (``self.rpc.method``)."""

    @overload
    def on(
        self, event: str, handler: EventHandler, *, version: int = 1, consumer: str | None = None
    ) -> None: ...

    @overload
    def on(
        self,
        event: type[P],
        handler: Callable[[Envelope, P], Awaitable[None]],
        *,
        version: int = 1,
        consumer: str | None = None,
    ) -> None: ...

    def on(
        self,
        event: str | type[P],
        handler: EventHandler | Callable[[Envelope, P], Awaitable[None]],
        *,
        version: int = 1,
        consumer: str | None = None,
    ) -> None:
        """Handle an event type: by its payload schema (``self.on(InteractionCaptured, fn)``, the
        one event type registered for it in :data:`shared.events.PAYLOADS`; ``fn(env, payload)``
        gets the validated payload), or by name (``"#"``: every public event; ``fn(env)``).
        ``consumer`` only names the queue the handler had in the old layout, for the migration."""
        if isinstance(event, str):
            self._bind(event, version, handler, consumer)  # type: ignore[arg-type]
            return
        pairs = event_types_of(event)
        if len(pairs) != 1:
            raise ValueError(f"{event.__name__} is the payload of {len(pairs)} event types; name one")
        event_type, version = pairs[0]
        model = event
        typed: Callable[[Envelope, P], Awaitable[None]] = handler  # type: ignore[assignment]

        async def decoded(env: Envelope) -> None:
            await typed(env, model.model_validate(env.payload))

        self._bind(event_type, version, decoded, consumer)

    def serve(self, request: type[Q], handler: Callable[[dict[str, Any], Q], Awaitable[Any]]) -> None:
        """Answer ``request.METHOD``: the arguments are validated as ``request`` (422 naming each
        field that does not fit) before ``handler(ctx, request)`` runs."""

        async def method(ctx: dict[str, Any], args: dict[str, Any]) -> Any:
            try:
                req = request.model_validate(args)
            except ValidationError as exc:
                raise ValidationFailed(problems(exc)) from exc
            return await handler(ctx, req)

        self.rpc.method(request.METHOD)(method)

    def _bind(self, event_type: str, version: int, handler: EventHandler, consumer: str | None) -> None:
        rk = "#" if event_type == "#" else f"{event_type}.v{version}"
        if rk in self.events.handlers:
            raise ValueError(f"{self.name} handles {rk} twice")
        self.events.handlers[rk] = handler
        self.legacy_queues.append((f"{self.rt.topology.ns}.{consumer or self.name}.{rk}", rk))

    async def prepare(self) -> None:
        """Before the broker delivers anything: indexes."""
        await self.store.ensure_indexes(self.indexes)

    async def start(self) -> None:
        """After the broker is up: background work, then ready."""
        self.store.start_sweeper(self.settings.outbox_sweep_s)
        await self.on_start()
        self.started = True
        log.info("service started", extra={"service": self.name})

    async def on_start(self) -> None:
        """Background loops of the service (reminder scheduler, IMAP pollers...)."""

    async def stop(self) -> None:
        self.started = False
        await self.on_stop()
        await self.store.stop()

    async def on_stop(self) -> None:
        """Stop what ``on_start`` began."""


class Host(Protocol):
    """What a process hosting services offers (``crm.hub.Hub``), as the per-process health and
    metrics read it: its settings and runtime, its services, its readiness."""

    settings: Settings
    runtime: Runtime
    services: dict[str, Service]

    async def readiness(self) -> dict[str, Any]: ...
