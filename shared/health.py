"""``/health``, ``/ready`` and ``/metrics`` of a service process (every ``crm run <service>``,
``crm run workers``), on its health port (``--port`` or ``CRM_HEALTH_PORT``); the connectors
process serves them beside its hook ingress on the ingress port.

- ``GET /health``: 200 ``{"status": "ok"}`` while the process's event loop answers (liveness).
- ``GET /ready``: 200 ``{"ready": true, "missing": []}`` when the database and the broker answer
  and every hosted service has started (its consumer, RPC queue and background loops run); else
  503 naming what is missing (``database``, ``broker``, ``service:<name>``).
- ``GET /metrics``: Prometheus text (:mod:`shared.metrics`), with ``Authorization: Bearer
  <CRM_METRICS_TOKEN>`` (the root token when unset) as on the gateway.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from shared.errors import Unauthorized
from shared.metrics import ServiceMetrics
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.service import Host as Hub

log = logging.getLogger(__name__)


def metrics_token(settings: Settings) -> str | None:
    """``CRM_METRICS_TOKEN``, else the root token (set, or stored under ``CRM_DATA_DIR`` by a
    gateway); ``None``: nobody may read the metrics until one is set."""
    if settings.metrics_token or settings.root_token:
        return settings.metrics_token or settings.root_token
    path = settings.data_dir / "root_token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def add_health_routes(app: FastAPI, hub: Hub, metrics: ServiceMetrics) -> None:
    """The three routes, on ``app`` (routes added before a catch-all mount win over it)."""
    settings = hub.settings

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        state = await hub.readiness()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    @app.get("/metrics")
    async def render(request: Request) -> Response:
        token = (request.headers.get("authorization") or "").strip().partition(" ")[2].strip()
        expected = metrics_token(settings)
        if expected is None or not secrets.compare_digest(token.encode(), expected.encode()):
            err = Unauthorized("Send `Authorization: Bearer <metrics token>` (CRM_METRICS_TOKEN).")
            return JSONResponse(err.to_problem(), status_code=401, media_type="application/problem+json")
        try:
            await metrics.refresh(hub)
        except Exception:  # a dependency being down must not take the metrics with it
            log.warning("metrics not refreshed", exc_info=True)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def health_app(hub: Hub, metrics: ServiceMetrics) -> FastAPI:
    """The health port's app of a process that serves nothing else over HTTP."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    add_health_routes(app, hub, metrics)
    return app
