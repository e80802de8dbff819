"""``crm run all|gateway|contacts|deals|tasks|analytics|connectors``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from shared.hub import SERVICES, BrokerUnreachable, Hub
from shared.localmongo import LocalMongo
from shared.logs import setup_logging
from shared.settings import Settings

log = logging.getLogger("crm")


def _serve_http(app: Any, settings: Settings, port: int) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


async def _run_services(settings: Settings, names: list[str], mongo_url: str) -> None:
    hub = Hub(settings, names, mongo_url=mongo_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await hub.start()
    log.info("services running", extra={"services": names})
    try:
        await stop.wait()
    finally:
        await hub.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crm", description="Run the CRM hub or one of its services.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the hub (all) or one process of it")
    run.add_argument("what", choices=["all", "gateway", *SERVICES])
    run.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)
    local: LocalMongo | None = None
    mongo_url = settings.mongo_url
    if not mongo_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        local = LocalMongo(settings.data_dir / "mongo", log_path=settings.data_dir / "mongo.log").start()
        mongo_url = local.url
        log.info("local MongoDB-protocol server started", extra={"port": local.port})
    try:
        if args.what in ("all", "gateway"):
            from gateway.app import create_app

            port = args.port or settings.port
            app = create_app(settings, services=None if args.what == "all" else [], mongo_url=mongo_url)
            _serve_http(app, settings, port)
        elif args.what == "connectors":
            from fastapi import FastAPI

            from services.connectors.main import ConnectorsService

            hub = Hub(settings, ["connectors"], mongo_url=mongo_url)
            svc = hub.services["connectors"]
            assert isinstance(svc, ConnectorsService)
            app = FastAPI(lifespan=_lifespan(hub))
            app.mount("/", svc.ingress_app())
            _serve_http(app, settings, args.port or settings.port + 1)
        else:
            asyncio.run(_run_services(settings, [args.what], mongo_url))
    except BrokerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if local:
            local.stop()
    return 0


def _lifespan(hub: Hub) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    return lifespan


if __name__ == "__main__":
    raise SystemExit(main())
