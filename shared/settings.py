"""One typed settings object: the ``CRM_*`` variables of API.md, nothing read at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Hub configuration. Every field has a working default for a single machine."""

    model_config = SettingsConfigDict(env_prefix="CRM_", extra="ignore")

    port: int = 8000
    host: str = "127.0.0.1"
    rabbit_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    mongo_url: str | None = None
    """Unset: ``crm run`` starts the local MongoDB-protocol server under ``data_dir``."""
    data_dir: Path = Path("./.crm-data")
    root_token: str | None = None
    public_url: str | None = None
    namespace: str = "crm"
    rate_limit: float = 20.0
    """Requests per second per API key (token bucket; burst = 2x)."""
    rate_burst: int | None = None
    auth_fail_rate: float = 1.0
    """Failed authentications (401) per second per client address, burst ``auth_fail_burst``;
    over it the address gets 429 whatever key it sends. 0 = unlimited."""
    auth_fail_burst: int = 20
    max_body: int = 1024 * 1024
    hook_rate: float = 50.0
    """Hooks per second per channel (burst 2x); over it ``/hooks/*`` answers 429. 0 = off."""
    hook_client_rate: float = 20.0
    """Hooks per second per client address (burst 2x). 0 = off."""
    max_import_body: int = 256 * 1024 * 1024
    """Body limit of the streamed CSV import (``POST /api/v1/contacts/import``)."""
    metrics_token: str | None = None
    """Bearer token of ``GET /metrics``; unset = the root token."""
    secret_key: str | None = None
    """Fernet key for secrets at rest; unset = generated once under ``data_dir``."""
    rpc_timeout_s: float = 10.0
    log_format: str = Field(default="auto", pattern="^(auto|json|text)$")
    log_level: str = "INFO"
    allow_private_urls: bool = False
    """Let the hub call loopback, private and link-local addresses on any port (subscriptions,
    rule webhooks, provider base URLs, IMAP hosts). Tests and local development only."""
    connectors_url: str | None = None
    """When the connectors service runs in other processes, where their hook ingress listens
    (comma-separated: several replicas, taken in turn, an unreachable one skipped)."""
    health_port: int | None = None
    """``crm run <service>`` / ``crm run workers``: serve ``/health``, ``/ready`` and ``/metrics``
    on this port (unset: no HTTP port; ``--port`` overrides it)."""
    live_buffer: int = 1000
    """Latest public events each gateway keeps per tenant for ``Last-Event-ID`` resumes."""
    live_client_buffer: int = 256
    """Events one live stream may fall behind before it ends with an ``overflow`` event."""
    retry_limit: int = 5
    """Failed deliveries of one event to one service before it goes to the dead-letter queue."""
    queue_type: Literal["quorum", "classic"] = "classic"
    """Type of the durable queues this installation declares. ``classic`` for a single broker
    node (measured: scripts/broker-cycles.py, README); ``quorum`` for a cluster (deploy/)."""
    broker_timeout_s: float = 30.0
    """How long start-up waits for the broker to answer one step (handshake, a declare) before
    the process exits with an error naming the broker URL and the step."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop of every hub process (uvloop: libuv, measured faster in tests/perf)."""
    consumer_prefetch: int = 200
    """Unacknowledged events one service's consumer holds at once."""
    consumer_batch: int = 100
    """Events of one tenant a consumer handles in one transaction when they wait together (1:
    every event alone)."""
    outbox_sweep_s: float = 2.0
    enrich_retry_s: float = 2.0
    """First wait before a provider fetch that failed (Meta's Graph API) is tried again; doubles."""
    send_lease_s: float = 120.0
    """How long a message being sent is held by the worker that claimed it; a claim older than
    this was cut off by a crash (longer than any provider call's timeout)."""
    send_backoff_s: float = 2.0
    """First wait before a failed send is tried again (doubling, at least the provider's
    Retry-After), up to 5 attempts."""
    tasks_scheduler_s: float = 1.0
    """How often the tasks service claims due reminders and overdue notices."""

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def burst(self) -> int:
        return self.rate_burst or max(1, int(self.rate_limit * 2))

    def db_name(self, service: str) -> str:
        return f"{self.namespace}_{service}"
