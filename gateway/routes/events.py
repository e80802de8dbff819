"""Live events: ``GET /api/v1/events/stream`` (Server-Sent Events)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from gateway.deps import GW, Auth

router = APIRouter(prefix="/api/v1", tags=["events"])

SSE_EXAMPLE = (
    "retry: 3000\n\n"
    "id: 01jd7w3k9q8m2x4v6b5n7c0a1z\n"
    "event: contact.created\n"
    'data: {"event_id":"01jd7w3k9q8m2x4v6b5n7c0a1z","event_type":"contact.created","version":1,'
    '"occurred_at":"2026-11-27T10:00:00+00:00","tenant_id":"01jd7w…","payload":{"contact_id":"01jd7x…",'
    '"owner_id":null}}\n\n'
    ": keep-alive\n\n"
)


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An endless `text/event-stream`. Each event's `id` is its `event_id`; "
            "reconnect with `Last-Event-ID` to receive what was missed (at-least-once: dedupe on "
            "the id). Comment lines (`: keep-alive`) are heartbeats. A client that reads slower than "
            "its events come (`CRM_LIVE_CLIENT_BUFFER` behind) gets `event: overflow` with "
            '`data: {"reason": "client_too_slow", "last_event_id": ...}` and the stream ends: '
            "reconnect with that `Last-Event-ID` to receive the rest.",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}},
        }
    },
)
async def stream(
    p: Auth,
    gw: GW,
    last_event_id: Annotated[
        str | None, Header(description="The id of the last event received; resume after it.")
    ] = None,
    types: Annotated[
        str | None, Query(description="Comma-separated event types to receive (default: all).")
    ] = None,
    heartbeat: Annotated[float, Query(ge=1, le=60, description="Seconds between heartbeats.")] = 15.0,
) -> StreamingResponse:
    """The tenant's events the caller may see: admins all; managers and viewers what they own or
    nobody owns, unless the tenant lets managers see all."""
    wanted = {t.strip() for t in types.split(",") if t.strip()} if types else None
    live = gw.identity.live
    metrics = gw.identity.metrics

    def visible(event_type: str, payload: dict[str, Any]) -> bool:
        return (wanted is None or event_type in wanted) and p.may_see(payload)

    async def body() -> AsyncIterator[bytes]:
        metrics.sse_streams.inc()
        try:
            async for chunk in live.stream(p.tenant_id, visible, last_event_id, heartbeat):
                yield chunk
        finally:
            metrics.sse_streams.dec()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
