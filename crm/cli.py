"""``crm run all|gateway|contacts|deals|tasks|analytics|connectors`` and ``crm broker drop <ns>``.

Start-up is bounded and interruptible: every broker step has ``CRM_BROKER_TIMEOUT_S``, a broker
that never answers ends the process with exit code 2 and a message naming the URL and the step,
and SIGTERM/SIGINT stop the process within ``STOP_GRACE_S`` in every state, starting included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from crm.hub import CONSUMING, SERVICES, Hub, topology_of
from shared.bus import BrokerUnreachable, drop_namespace
from shared.crypto import load_or_create_key
from shared.health import add_health_routes, health_app
from shared.localmongo import LocalMongo
from shared.logs import setup_logging
from shared.metrics import HookTiming, ServiceMetrics
from shared.settings import Settings

log = logging.getLogger("crm")
STOP_GRACE_S = 8.0
"""Time given to a stop (HTTP server, consumers, clients) before the process exits anyway."""


class Stopped(Exception):
    """A signal asked the process to stop."""


async def _until_stopped(stop: asyncio.Event, aw: Awaitable[Any]) -> Any:
    """Run ``aw`` unless a stop signal comes first (then cancel it and raise :class:`Stopped`)."""
    task = asyncio.ensure_future(aw)
    waiter = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        return task.result()
    task.cancel()
    await asyncio.wait({task}, timeout=2)  # never waits on a task that ignores the cancel
    raise Stopped()


def _on_loop(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on the configured event loop (``CRM_EVENT_LOOP``)."""
    if settings.event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)


async def _serve(
    start: Callable[[], Awaitable[None]],
    stop_all: Callable[[], Awaitable[None]],
    app: Any | None,
    settings: Settings,
    port: int,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        _watchdog.arm()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await _until_stopped(stop, start())
        if app is None:
            log.info("services running")
            await stop.wait()
            return
        import uvicorn

        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
        )
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        serving = asyncio.ensure_future(server.serve())
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(serving), STOP_GRACE_S / 2)
        except TimeoutError:
            server.force_exit = True
        waiter.cancel()
    except Stopped:
        log.info("stopped while starting")
    finally:
        stopping = asyncio.ensure_future(stop_all())
        await asyncio.wait({stopping}, timeout=STOP_GRACE_S / 2)


class _Watchdog:
    """Ends the process ``STOP_GRACE_S`` after a stop signal, whatever still runs (a client
    waiting on a broker that never answers), after stopping the local database server."""

    def __init__(self) -> None:
        self.cleanup: list[Callable[[], None]] = []
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(STOP_GRACE_S, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        for fn in self.cleanup:
            with contextlib.suppress(Exception):
                fn()
        log.warning("stop took longer than %s s; exiting", STOP_GRACE_S)
        os._exit(0)


_watchdog = _Watchdog()


def _run(args: argparse.Namespace, settings: Settings) -> int:
    local: LocalMongo | None = None
    mongo_url = settings.mongo_url
    if not mongo_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        local = LocalMongo(settings.data_dir / "mongo", log_path=settings.data_dir / "mongo.log").start()
        mongo_url = local.url
        _watchdog.cleanup.append(local.stop)
        log.info("local MongoDB-protocol server started", extra={"port": local.port})
    try:
        if args.what == "all" and not args.one_process:
            return supervise(settings, mongo_url, args.port or settings.port)
        if args.what in ("all", "gateway"):
            from gateway.app import create_app

            app = create_app(
                settings,
                services=None if args.what == "all" else [],
                mongo_url=mongo_url,
                ingress=args.ingress,
            )
            _on_loop(
                settings,
                _serve(app.state.startup, app.state.shutdown, app, settings, args.port or settings.port),
            )
        elif args.what == "connectors":
            from fastapi import FastAPI

            from services.connectors.main import ConnectorsService

            hub = Hub(settings, ["connectors"], mongo_url=mongo_url)
            metrics = ServiceMetrics()
            metrics.instrument(hub)
            svc = hub.services["connectors"]
            assert isinstance(svc, ConnectorsService)
            ingress = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
            add_health_routes(ingress, hub, metrics)  # before the ingress's catch-all
            ingress.mount("/", HookTiming(svc.ingress_app(), metrics))
            _on_loop(settings, _serve(hub.start, hub.stop, ingress, settings, args.port or settings.port + 1))
        else:  # workers (every service) or one service; HTTP only for its health port
            hub = Hub(
                settings, list(SERVICES) if args.what == "workers" else [args.what], mongo_url=mongo_url
            )
            metrics = ServiceMetrics()
            metrics.instrument(hub)
            port = args.port or settings.health_port or 0
            health = health_app(hub, metrics) if port else None
            _on_loop(settings, _serve(hub.start, hub.stop, health, settings, port))
    except BrokerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if local:
            local.stop()
    return 0


def _die_with_parent() -> None:
    """In a child of the supervisor: the kernel kills it when the supervisor dies (kill -9 of
    ``make run`` leaves no orphan holding the port or consuming)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the children notice the lost parent on their next stop signal


def supervise(settings: Settings, mongo_url: str, port: int) -> int:
    """``crm run all``: the gateway with the hook ingress in one process, the five services in
    another (the ingress never shares an event loop with the consumers), under this one. The
    first stop signal goes to both; a child that ends ends the other; a stop takes at most
    ``STOP_GRACE_S`` + 1 s. Returns the exit code of the child that ended first (2: the broker)."""
    load_or_create_key(settings.secret_key, settings.data_dir)  # one key, before two processes read it
    env = {**os.environ, "CRM_MONGO_URL": mongo_url, "CRM_PORT": str(port)}
    base = [sys.executable, "-m", "crm.cli", "run"]
    children = [
        subprocess.Popen([*base, "gateway", "--ingress"], env=env, preexec_fn=_die_with_parent),  # noqa: S603
        subprocess.Popen([*base, "workers"], env=env, preexec_fn=_die_with_parent),  # noqa: S603
    ]
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    code = 0
    while not stopping:
        ended = [c for c in children if c.poll() is not None]
        if ended:
            code = ended[0].returncode or 0
            break
        time.sleep(0.1)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S + 1
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0 if stopping else code


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    """``crm broker drop <namespace>``: delete an installation's queues and exchanges."""
    topology = topology_of(settings.model_copy(update={"namespace": args.namespace}))
    queues = [
        *topology.durable_queues(CONSUMING, SERVICES),
        *legacy_queue_names(args.namespace),
    ]
    try:
        dropped = asyncio.run(
            drop_namespace(settings.rabbit_url, topology, queues, settings.broker_timeout_s)
        )
    except BrokerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"dropped {len(dropped)} queues and exchanges of namespace {args.namespace}")
    return 0


def installation(namespace: str) -> Hub:
    """The services of one installation, built but not connected (their tables name the queues)."""
    from cryptography.fernet import Fernet

    from gateway.identity import GatewayService

    settings = Settings(namespace=namespace, secret_key=Fernet.generate_key().decode())
    hub = Hub(settings, list(SERVICES), mongo_url="mongodb://127.0.0.1:9/?connect=false")
    hub.add(GatewayService(hub.runtime))
    return hub


def definitions(namespace: str, queue_type: str = "quorum") -> dict[str, Any]:
    """RabbitMQ definitions (``rabbitmqctl import_definitions``) of everything the hub declares:
    exchanges, one queue per consuming service with its bindings, the dead letters, the RPC
    queues. ``deploy/rabbitmq-definitions.json`` is this for ``crm`` with quorum queues."""
    hub = installation(namespace)
    t = topology_of(hub.settings.model_copy(update={"queue_type": queue_type}))
    vhost = "/"
    exchanges = [
        {
            "name": n,
            "vhost": vhost,
            "type": "topic",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }
        for n in (t.events, t.internal, t.dead_letter)
    ]
    queues = []
    bindings = [
        {
            "source": t.dead_letter,
            "vhost": vhost,
            "destination": t.dead_letters,
            "destination_type": "queue",
            "routing_key": "#",
            "arguments": {},
        }
    ]
    for svc in hub.services.values():
        if not svc.events.handlers:
            continue
        name = t.service_queue(svc.name)
        queues.append(
            {
                "name": name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": t.queue_arguments(),
            }
        )
        for rk in sorted(svc.events.handlers):
            source = t.events if rk == "#" else t.exchange_for(rk.rsplit(".v", 1)[0])
            bindings.append(
                {
                    "source": source,
                    "vhost": vhost,
                    "destination": name,
                    "destination_type": "queue",
                    "routing_key": rk,
                    "arguments": {},
                }
            )
    queues.append(
        {
            "name": t.dead_letters,
            "vhost": vhost,
            "durable": True,
            "auto_delete": False,
            "arguments": t.queue_arguments(dead_letter=False),
        }
    )
    for svc in hub.services.values():
        if svc.rpc.methods:
            queues.append(
                {
                    "name": t.rpc_queue_name(svc.name),
                    "vhost": vhost,
                    "durable": True,
                    "auto_delete": False,
                    "arguments": {},
                }
            )
    return {
        "comment": (
            "Generated by `crm broker definitions` (a unit test keeps it current): everything the hub "
            f"declares for namespace {namespace!r} with {queue_type} queues, for a cluster. The hub "
            "declares the same itself at start; importing this first lets an operator review it."
        ),
        "vhosts": [{"name": vhost}],
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
        "policies": [
            {
                "vhost": vhost,
                "name": f"{namespace}-dead-letters-bounded",
                "pattern": f"^{namespace}\\.dead-letters$",
                "apply-to": "queues",
                "definition": {"max-length": 100000, "overflow": "reject-publish"},
                "priority": 1,
            }
        ],
    }


def legacy_queue_names(namespace: str) -> list[str]:
    """The queues the layout before one queue per service declared (one per consumer and key),
    as the services' own tables name them."""
    return sorted({q for svc in installation(namespace).services.values() for q, _ in svc.legacy_queues})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crm", description="Run the CRM hub or one of its services.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the hub (all) or one process of it")
    run.add_argument("what", choices=["all", "gateway", "workers", *SERVICES])
    run.add_argument(
        "--port",
        type=int,
        default=None,
        help="gateway, connectors: the HTTP port; a service or workers: the health port (CRM_HEALTH_PORT)",
    )
    run.add_argument(
        "--ingress", action="store_true", help="gateway: serve /hooks here (connectors run elsewhere)"
    )
    run.add_argument(
        "--one-process", action="store_true", help="all: gateway and services in this one process"
    )
    broker = sub.add_parser("broker", help="broker administration")
    broker_sub = broker.add_subparsers(dest="action", required=True)
    drop = broker_sub.add_parser("drop", help="delete an installation's queues and exchanges")
    drop.add_argument("namespace")
    defs = broker_sub.add_parser("definitions", help="print the RabbitMQ definitions of an installation")
    defs.add_argument("--namespace", default=None)
    defs.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
    args = parser.parse_args(argv)

    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    if args.cmd == "broker" and args.action == "definitions":
        print(json.dumps(definitions(args.namespace or settings.namespace, args.queue_type), indent=2))
        return 0
    if args.cmd == "broker":
        return _broker(args, settings)
    return _run(args, settings)


if __name__ == "__main__":
    raise SystemExit(main())
