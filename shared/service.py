"""What every service is made of: its event table, its own store, an RPC endpoint, a lifecycle.

A service subclass registers its event handlers (``self.on``) and RPC methods (``self.rpc.method``)
in ``setup()`` and may add background work in ``on_start()``. The same class runs alone
(``crm run contacts``) or beside the others in one process (``crm run all``); only the process
boundary differs. Its events arrive on one queue, ``<ns>.<service>``, bound to every routing key
of its table (:class:`shared.bus.ServiceConsumer`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from pymongo import AsyncMongoClient

from shared.bus import Bus, EventHandler, EventPublisher, RpcServer, Subscription, Topology
from shared.clock import Clock
from shared.crypto import SecretBox
from shared.mongo import Indexes, Store
from shared.settings import Settings

log = logging.getLogger(__name__)


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

    def on(
        self, event_type: str, handler: EventHandler, *, version: int = 1, consumer: str | None = None
    ) -> None:
        """Handle ``event_type`` (``"#"``: every public event). ``consumer`` only names the queue
        the handler had in the old layout, for the migration."""
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
