"""Live events for ``GET /api/v1/events/stream`` (Server-Sent Events).

Each gateway process binds its own exclusive, auto-delete queue to every routing key (``#``) of the
events exchange and keeps, per tenant, a ring buffer of the latest events plus the queues of the
streams that are open. The SSE ``id`` of an event is its ``event_id``, the same in every process, so a
client that reconnects (to this or another gateway) with ``Last-Event-ID`` gets what it missed, as
long as it is still in the buffer; when the id is no longer known the whole buffer is sent again
(at-least-once: clients dedupe on the id).

A stream never loses an event silently. Each open stream has a bounded queue of its own
(``CRM_LIVE_CLIENT_BUFFER`` events); a client that reads slower than its events come fills it,
and then the stream ends with an explicit ``overflow`` event (no ``id``: a browser's EventSource
keeps the id of the last event it got) naming that id. The client reconnects with
``Last-Event-ID`` and the backlog resumes after it: nothing is lost while the tenant's ring buffer
(``CRM_LIVE_BUFFER``, larger than the client's queue) still holds that id.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from shared.events import Envelope, is_public


def is_internal(event_type: str) -> bool:
    """Not one of the public event types of API.md. Those are the only ones published to the
    exchange the gateway reads; this check is the second line of defence."""
    return not is_public(event_type)


def public_event(env: Envelope) -> dict[str, Any]:
    """What clients receive for one event (the SSE ``data`` and the webhook body's core)."""
    return {
        "event_id": env.event_id,
        "event_type": env.event_type,
        "version": env.version,
        "occurred_at": env.occurred_at.isoformat(),
        "tenant_id": env.tenant_id,
        "payload": env.payload,
    }


def sse_frame(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event['event_id']}\nevent: {event['event_type']}\ndata: {data}\n\n".encode()


def overflow_frame(last_event_id: str | None) -> bytes:
    """The last frame of a stream whose client fell behind: resume with ``Last-Event-ID``."""
    data = json.dumps(
        {
            "reason": "client_too_slow",
            "last_event_id": last_event_id,
            "detail": "Events came faster than this stream was read; reconnect with Last-Event-ID "
            "set to last_event_id to receive the rest.",
        },
        separators=(",", ":"),
    )
    return f"event: overflow\ndata: {data}\n\n".encode()


class Listener:
    """One open stream's bounded queue; ``overflowed`` once an event found it full."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def offer(self, event: dict[str, Any]) -> None:
        if self.overflowed:
            return  # the stream ends after what it holds; the rest comes from the backlog
        if self.queue.full():
            self.overflowed = True
            return
        self.queue.put_nowait(event)


class LiveFeed:
    """Per-tenant ring buffers and listeners, in one process's memory."""

    def __init__(self, buffer_size: int = 1000, listener_queue: int = 256) -> None:
        self.buffer_size = buffer_size
        self.listener_queue = listener_queue
        self._buffers: dict[str, deque[dict[str, Any]]] = {}
        self._ids: dict[str, set[str]] = {}
        """The event ids in each tenant's buffer (a redelivery is recognised without a scan)."""
        self._listeners: dict[str, set[Listener]] = {}

    def publish(self, env: Envelope) -> None:
        if is_internal(env.event_type):
            return
        event = public_event(env)
        buf = self._buffers.setdefault(env.tenant_id, deque(maxlen=self.buffer_size))
        ids = self._ids.setdefault(env.tenant_id, set())
        if env.event_id in ids:
            return  # a redelivery
        if len(buf) == buf.maxlen:
            ids.discard(buf[0]["event_id"])
        buf.append(event)
        ids.add(env.event_id)
        for listener in list(self._listeners.get(env.tenant_id, ())):
            listener.offer(event)  # never blocks the feed; a full one ends its stream

    def backlog(self, tenant_id: str, last_event_id: str | None) -> list[dict[str, Any]]:
        """Buffered events after ``last_event_id`` (all of them when the id is unknown)."""
        if not last_event_id:
            return []
        events = list(self._buffers.get(tenant_id, ()))
        for i, event in enumerate(events):
            if event["event_id"] == last_event_id:
                return events[i + 1 :]
        return events

    def listen(self, tenant_id: str) -> Listener:
        listener = Listener(self.listener_queue)
        self._listeners.setdefault(tenant_id, set()).add(listener)
        return listener

    def unlisten(self, tenant_id: str, listener: Listener) -> None:
        listeners = self._listeners.get(tenant_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[tenant_id]

    def listeners(self) -> int:
        return sum(len(v) for v in self._listeners.values())

    async def stream(
        self,
        tenant_id: str,
        visible: Callable[[str, dict[str, Any]], bool],
        last_event_id: str | None,
        heartbeat_s: float = 15.0,
    ) -> AsyncIterator[bytes]:
        """SSE bytes: a retry hint, the backlog after ``last_event_id``, then live events, with a
        comment line as heartbeat when nothing happened for ``heartbeat_s``; an ``overflow`` event
        and the end when the client fell a whole queue behind."""
        listener = self.listen(tenant_id)  # listen first, then read the backlog: no gap
        queue = listener.queue
        last = last_event_id
        try:
            yield b"retry: 3000\n\n"
            sent: set[str] = set()
            for event in self.backlog(tenant_id, last_event_id):
                sent.add(event["event_id"])
                last = event["event_id"]
                if visible(event["event_type"], event["payload"]):
                    yield sse_frame(event)
            while True:
                if listener.overflowed and queue.empty():
                    yield overflow_frame(last)
                    return
                try:
                    event = await asyncio.wait_for(queue.get(), heartbeat_s)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event["event_id"] in sent:
                    sent.discard(event["event_id"])
                    continue
                last = event["event_id"]  # the resume point, shown or not (Last-Event-ID skips it)
                if visible(event["event_type"], event["payload"]):
                    yield sse_frame(event)
        finally:
            self.unlisten(tenant_id, listener)
