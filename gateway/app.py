"""The one public HTTP surface: client API, SSE, and /hooks routed to the connectors ingress."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pymongo.errors import ConnectionFailure
from starlette.exceptions import HTTPException as StarletteHTTPException

from crm.hub import SERVICES, Hub
from gateway.audit import AuditMiddleware
from gateway.console import mount_console
from gateway.deps import Gateway
from gateway.hookproxy import HookProxy, targets_of
from gateway.identity import GatewayService
from gateway.metrics import MetricsMiddleware
from gateway.middleware import ContentType, Idempotency, RateLimit, session_cookie
from gateway.openapi import complete_openapi
from gateway.routes import ROUTERS
from shared.asgi import BodyLimit
from shared.bus import READY_METHOD, RpcClient
from shared.clock import Clock
from shared.errors import AppError, ServiceUnavailable, Unauthorized, ValidationFailed, problem_from_pydantic
from shared.metrics import HookTiming, ServiceMetrics
from shared.settings import Settings

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def resolve_root_token(settings: Settings) -> str:
    """``CRM_ROOT_TOKEN``, else the token stored under ``CRM_DATA_DIR`` (generated and printed once)."""
    if settings.root_token:
        return settings.root_token
    path = settings.data_dir / "root_token"
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = "root_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    print(f"CRM root token (shown once; stored in {path}): {token}", file=sys.stderr, flush=True)
    return token


def problem(err: AppError) -> JSONResponse:
    return JSONResponse(err.to_problem(), status_code=err.status, media_type=PROBLEM, headers=err.headers)


def create_app(
    settings: Settings | None = None,
    *,
    services: list[str] | None = None,
    mongo_url: str | None = None,
    clock: Clock | None = None,
    ingress: bool = False,
) -> FastAPI:
    """The gateway app; with ``services`` (default: all) it hosts those services in-process.
    With ``ingress`` (and connectors not hosted) it serves ``/hooks`` itself, as the gateway
    process of ``crm run all`` does, while the services run in the workers process."""
    settings = settings or Settings()
    names = list(SERVICES) if services is None else services
    url = mongo_url or settings.mongo_url
    if not url:
        raise RuntimeError("no MongoDB URL: set CRM_MONGO_URL or run through `crm run`")
    hub = Hub(settings, names, mongo_url=url, clock=clock)
    identity = GatewayService(hub.runtime)
    hub.add(identity)
    service_metrics = ServiceMetrics()  # consumer lag, outbox, dead letters of what this process hosts
    service_metrics.instrument(hub)
    rpc = RpcClient(settings.rabbit_url, hub.runtime.topology, settings.rpc_timeout_s)
    gw = Gateway(settings, hub, identity, rpc, resolve_root_token(settings))
    hooks: Any = hub.services.get("connectors") or (hub.ingress() if ingress else None)
    if hooks is not None and "connectors" not in hub.services:
        gw.ingress = hooks
    remote = [n for n in SERVICES if n not in hub.services]
    proxy = HookProxy(targets_of(settings.connectors_url))

    async def startup() -> None:
        await hub.start()
        await rpc.start(settings.broker_timeout_s)
        if hooks is not None and "connectors" not in hub.services:
            await hooks.start_ingress()

    async def shutdown() -> None:
        if hooks is not None and "connectors" not in hub.services:
            await hooks.stop_ingress()
        await proxy.aclose()
        await rpc.stop()
        await hub.stop()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await startup()
        try:
            yield
        finally:
            await shutdown()

    app = FastAPI(
        title="CRM hub",
        version="1.0.0",
        description="Every customer touch on one card: client API, hooks, live events.",
        lifespan=lifespan,
    )
    app.state.gateway = gw
    app.state.startup = startup
    app.state.shutdown = shutdown

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        bad_json = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if bad_json:
            return problem(
                AppError("The request body is not valid JSON.", code="malformed_json", title="Malformed body")
            )
        return problem(problem_from_pydantic(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(
            AppError(
                str(exc.detail),
                status=exc.status_code,
                code=f"http_{exc.status_code}",
                title=str(exc.detail),
                headers=dict(exc.headers or {}),  # a 405's Allow
            )
        )

    @app.exception_handler(ConnectionFailure)
    async def _database_down(_: Request, exc: ConnectionFailure) -> JSONResponse:
        log.warning("request failed: the database is unreachable")
        return problem(
            ServiceUnavailable("The database is unreachable; retry later.", headers={"Retry-After": "5"})
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RecursionError):  # a body nested hundreds deep, wherever it was walked
            return problem(
                ValidationFailed({"body": "nested too deeply"}, detail="The body is nested too deeply.")
            )
        log.exception("unhandled error")
        return problem(AppError("Internal error.", status=500, code="internal", title="Internal error"))

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            401: {
                "description": "No or wrong metrics token",
                "content": {PROBLEM: {"schema": {"type": "object"}}},
            },
        },
    )
    async def metrics(request: Request) -> Response:
        """Request rates and latencies by route, hook acceptance, event lag, webhook attempts and
        the webhook backlog (pending deliveries, age of the oldest due one), and the consumer
        metrics of the services this process hosts (queue depth, lag, outbox, dead letters). Needs
        `Authorization: Bearer <CRM_METRICS_TOKEN>` (the root token when that is unset)."""
        token = (request.headers.get("authorization") or "").strip().partition(" ")[2].strip()
        expected = settings.metrics_token or gw.root_token
        if not secrets.compare_digest(token.encode(), expected.encode()):
            return problem(Unauthorized("Send `Authorization: Bearer <metrics token>`."))
        try:
            await identity.webhooks.observe_backlog(identity.metrics)
            await service_metrics.refresh(hub)
        except Exception:  # the database being down must not take the metrics with it
            log.warning("webhook backlog not measured", exc_info=True)
        return Response(identity.metrics.render() + service_metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/ready",
        tags=["ops"],
        responses={
            503: {
                "description": "Something is missing",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def ready() -> JSONResponse:
        state = await hub.readiness()
        if not rpc.connected:
            state["missing"].append("rpc")
        else:  # services of other processes: each says whether it started (asked at once)

            async def started(name: str) -> bool:
                try:
                    return bool(await rpc.call(name, READY_METHOD, {}, timeout=2.0))
                except AppError:
                    return False

            answers = await asyncio.gather(*(started(n) for n in remote))
            state["missing"] += [f"service:{n}" for n, ok in zip(remote, answers, strict=True) if not ok]
        state["ready"] = not state["missing"]
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    for router in ROUTERS:
        app.include_router(router)
    mount_console(app)

    if hooks is not None:
        app.mount("/hooks", HookTiming(hooks.ingress_app(), service_metrics))
    else:  # connectors run in other processes: one pooled client passes /hooks on
        proxy.mount(app)
    _document_hooks(app)

    # Outermost last: metrics see everything; the audit log sees only requests that really ran.
    app.add_middleware(AuditMiddleware, collection=lambda: identity.db.audit, clock=hub.runtime.clock)

    async def caller_still_valid(scope: Any) -> None:
        """Before a first answer is replayed: the caller (API key, root token, or console session
        with its CSRF token) would get through now."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        authorization = headers.get("authorization")
        cookie = session_cookie(scope)
        if authorization is None and cookie:
            await gw.sessions.authenticate(cookie, "POST", headers.get("x-csrf-token"))
            return
        token = (authorization or "").strip().partition(" ")[2].strip()
        if not (token and secrets.compare_digest(token.encode(), gw.root_token.encode())):
            await identity.authenticate(authorization)

    app.add_middleware(
        Idempotency,
        collection=lambda: identity.db.idempotency,
        clock=hub.runtime.clock,
        authenticate=caller_still_valid,
    )
    app.add_middleware(ContentType)
    app.add_middleware(
        RateLimit,
        rate=settings.rate_limit,
        burst=settings.burst,
        fail_rate=settings.auth_fail_rate,
        fail_burst=settings.auth_fail_burst,
    )
    app.add_middleware(BodyLimit, max_body=settings.max_body, streamed_max_body=settings.max_import_body)
    app.add_middleware(MetricsMiddleware, metrics=lambda: identity.metrics)
    return app


def _document_hooks(app: FastAPI) -> None:
    """The mounted ingress is not in FastAPI's schema by itself: describe it for clients."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        op = {
            "tags": ["hooks"],
            "summary": "Inbound hook of a channel (any sub-path, e.g. Mango's /events/call)",
            "parameters": [
                {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
            "responses": {
                "200": {"description": "Durably accepted, or a handshake answered"},
                "400": {
                    "description": "Unparseable body",
                    "content": {PROBLEM: {"schema": {"type": "object"}}},
                },
                "401": {"description": "Bad signature", "content": {PROBLEM: {"schema": {"type": "object"}}}},
                "404": {
                    "description": "No such channel",
                    "content": {PROBLEM: {"schema": {"type": "object"}}},
                },
                "413": {
                    "description": "Body too large",
                    "content": {PROBLEM: {"schema": {"type": "object"}}},
                },
                "429": {
                    "description": "Too many hooks from this address or for this channel",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {PROBLEM: {"schema": {"type": "object"}}},
                },
                "415": {
                    "description": "Wrong content type",
                    "content": {PROBLEM: {"schema": {"type": "object"}}},
                },
                "422": {
                    "description": "Parseable but invalid",
                    "content": {PROBLEM: {"schema": {"type": "object"}}},
                },
            },
        }
        schema.setdefault("paths", {})["/hooks/{channel_id}"] = {
            "get": {**op, "operationId": "hook_get"},
            "post": {**op, "operationId": "hook_post"},
        }
        app.openapi_schema = complete_openapi(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
