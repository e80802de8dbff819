"""Opens the clients once per process and runs a set of services on them."""

from __future__ import annotations

import importlib
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared.bus import EventPublisher, Topology, declare_topology, make_broker
from shared.clock import Clock, SystemClock
from shared.crypto import SecretBox, load_or_create_key
from shared.mongo import mongo_client, ping
from shared.service import Runtime, Service
from shared.settings import Settings

log = logging.getLogger(__name__)

SERVICES: dict[str, str] = {
    "contacts": "services.contacts.main:ContactsService",
    "deals": "services.deals.main:DealsService",
    "tasks": "services.tasks.main:TasksService",
    "analytics": "services.analytics.main:AnalyticsService",
    "connectors": "services.connectors.main:ConnectorsService",
}


def load_service(name: str) -> type[Service]:
    module, _, cls = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class BrokerUnreachable(RuntimeError):
    pass


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
        topology = Topology(settings.namespace, settings.retry_limit)
        broker = make_broker(settings.rabbit_url)
        self.runtime = Runtime(
            settings=settings,
            broker=broker,
            topology=topology,
            mongo=mongo_client(mongo_url),
            publisher=EventPublisher(broker, topology),
            clock=clock or SystemClock(),
            secrets=SecretBox(load_or_create_key(settings.secret_key, settings.data_dir)),
        )
        self.services: dict[str, Service] = {n: load_service(n)(self.runtime) for n in services}
        for svc in extra or []:
            self.services[svc.name] = svc
        for svc in self.services.values():
            broker.include_router(svc.router)
        self.broker_started = False

    def add(self, svc: Service) -> None:
        """Host one more service (before ``start``)."""
        self.services[svc.name] = svc
        self.runtime.broker.include_router(svc.router)

    async def start(self) -> None:
        rt = self.runtime
        if not await ping(rt.mongo):
            raise RuntimeError("MongoDB is not reachable (check CRM_MONGO_URL).")
        for svc in self.services.values():
            await svc.prepare()
        try:
            await rt.broker.connect()
        except Exception as exc:
            raise BrokerUnreachable(
                f"RabbitMQ is not reachable at {redact_url(self.settings.rabbit_url)} ({exc}). "
                "Start it with `rabbitmq-server -detached` (or set CRM_RABBIT_URL)."
            ) from exc
        await declare_topology(rt.broker, rt.topology)
        await rt.broker.start()
        self.broker_started = True
        for svc in self.services.values():
            await svc.start()

    async def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            try:
                await svc.stop()
            except Exception:
                log.exception("service stop failed", extra={"service": svc.name})
        if self.broker_started:
            await self.runtime.broker.stop()
            self.broker_started = False
        await self.runtime.mongo.close()

    async def readiness(self) -> dict[str, Any]:
        rt = self.runtime
        missing: list[str] = []
        if not await ping(rt.mongo):
            missing.append("database")
        if not self.broker_started or not await rt.broker.ping(timeout=2.0):
            missing.append("broker")
        missing += [f"service:{n}" for n, s in self.services.items() if not s.started]
        return {"ready": not missing, "missing": missing}
