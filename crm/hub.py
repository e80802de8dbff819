"""Opens the clients once per process and runs a set of services on them."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from shared.bus import (
    BrokerUnreachable,
    Bus,
    EventPublisher,
    ServiceConsumer,
    Topology,
    migrate_queue,
    redact_url,
)
from shared.clock import Clock, SystemClock
from shared.crypto import SecretBox, load_or_create_key
from shared.mongo import mongo_client, ping, unavailable
from shared.service import Runtime, Service
from shared.settings import Settings

log = logging.getLogger(__name__)

SERVICES: dict[str, str] = {
    "contacts": "services.contacts.service:ContactsService",
    "deals": "services.deals.service:DealsService",
    "tasks": "services.tasks.service:TasksService",
    "analytics": "services.analytics.service:AnalyticsService",
    "connectors": "services.connectors.main:ConnectorsService",
}
CONSUMING = (*SERVICES, "gateway")
"""Every service that has a queue of its own (``<ns>.<name>``)."""

__all__ = ["SERVICES", "BrokerUnreachable", "Hub", "redact_url"]


def load_service(name: str) -> type[Service]:
    module, _, cls = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def topology_of(settings: Settings) -> Topology:
    return Topology(settings.namespace, settings.retry_limit, settings.queue_type)


class Hub:
    """A process's runtime plus the services it hosts. ``start()``/``stop()`` are idempotent."""

    def __init__(
        self,
        settings: Settings,
        services: list[str],
        *,
        mongo_url: str,
        clock: Clock | None = None,
        extra: list[Service] | None = None,
    ) -> None:
        self.settings = settings
        topology = topology_of(settings)
        bus = Bus(settings.rabbit_url, topology, settings.broker_timeout_s)
        self.runtime = Runtime(
            settings=settings,
            bus=bus,
            topology=topology,
            mongo=mongo_client(mongo_url),
            publisher=EventPublisher(bus),
            clock=clock or SystemClock(),
            secrets=SecretBox(load_or_create_key(settings.secret_key, settings.data_dir)),
        )
        self.services: dict[str, Service] = {n: load_service(n)(self.runtime) for n in services}
        for svc in extra or []:
            self.services[svc.name] = svc
        self.consumers: dict[str, ServiceConsumer] = {}
        self.broker_started = False

    def ingress(self) -> Any:
        """The connectors service built only to serve ``/hooks`` in this process (its consumers,
        RPC and pollers run in another): started and stopped with ``start_ingress``."""
        return load_service("connectors")(self.runtime)

    def add(self, svc: Service) -> None:
        """Host one more service (before ``start``)."""
        self.services[svc.name] = svc

    async def start(self) -> None:
        rt = self.runtime
        if not await ping(rt.mongo):
            raise RuntimeError("MongoDB is not reachable (check CRM_MONGO_URL).")
        for svc in self.services.values():
            await svc.prepare()
        await rt.bus.connect()
        await rt.bus.declare_topology()
        for svc in self.services.values():
            if svc.events.handlers:
                consumer = ServiceConsumer(
                    rt.bus,
                    svc.events,
                    prefetch=self.settings.consumer_prefetch,
                    batch=svc.store.batch if self.settings.consumer_batch > 1 else None,
                    batch_max=self.settings.consumer_batch,
                    unavailable=unavailable,
                )
                await consumer.declare()
                for old, rk in svc.legacy_queues:
                    moved = await migrate_queue(
                        rt.bus, old, consumer.queue_name, exchange=rt.topology.events, routing_key=rk
                    )
                    if moved:
                        log.info(
                            "events moved from a queue of the old layout",
                            extra={"from": old, "to": consumer.queue_name, "count": moved},
                        )
                self.consumers[svc.name] = consumer
            if svc.rpc.methods:
                svc.rpc.unavailable = unavailable
                await svc.rpc.start(rt.bus)
        for consumer in self.consumers.values():
            await consumer.start()
        self.broker_started = True
        for svc in self.services.values():
            await svc.start()

    async def stop(self) -> None:
        for consumer in self.consumers.values():
            await consumer.stop()
        self.consumers.clear()
        for svc in reversed(list(self.services.values())):
            try:
                await svc.stop()
            except Exception:
                log.exception("service stop failed", extra={"service": svc.name})
            await svc.rpc.stop()
        if self.broker_started:
            self.broker_started = False
        await self.runtime.bus.close()
        await self.runtime.mongo.close()

    async def readiness(self) -> dict[str, Any]:
        rt = self.runtime
        missing: list[str] = []
        if not await ping(rt.mongo):
            missing.append("database")
        if not self.broker_started or not await rt.bus.ping(timeout=2.0):
            missing.append("broker")
        missing += [f"service:{n}" for n, s in self.services.items() if not s.started]
        return {"ready": not missing, "missing": missing}
