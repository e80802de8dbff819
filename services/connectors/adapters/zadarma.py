"""Zadarma PBX call notifications (``NOTIFY_*``).

Handshake: when the notification URL is saved, Zadarma calls ``GET ?zd_echo=<random>`` and expects
exactly that value back as the body.

Events are urlencoded POSTs. The ``Signature`` header is, as in Zadarma's own PHP library,
``base64_encode(hash_hmac('sha1', <string>, api_secret))`` (base64 of the *hex* digest) where
``<string>`` depends on the event:

- ``NOTIFY_START``, ``NOTIFY_INTERNAL``, ``NOTIFY_END``: ``caller_id + called_did + call_start``
- ``NOTIFY_ANSWER``: ``caller_id + destination + call_start``
- ``NOTIFY_OUT_START``, ``NOTIFY_OUT_END``: ``internal + destination + call_start``
- ``NOTIFY_RECORD``: ``pbx_call_id + call_id_with_rec``

``call_start`` is local time of the PBX (``config.timezone``, default Europe/Moscow). One call is
one timeline item, ``subject_key = zadarma:call:<pbx_call_id>``. NOTIFY_RECORD carries only the id
of the recording (``data.recording_id``); the file itself must be fetched with the API key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._tel_util import (
    call_data,
    call_summary,
    duration_of,
    form_dict,
    form_pairs,
    invalid,
    local_datetime,
    phones,
    recording_item,
    require_form,
    utc,
    zone_of,
)
from .base import (
    CallStatus,
    Captured,
    ChannelView,
    Direction,
    HookError,
    HookOutcome,
    HookResponse,
    RawRequest,
    Sender,
    bad_signature,
    constant_time_equal,
)

_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "NOTIFY_START": ("caller_id", "called_did", "call_start"),
    "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
    "NOTIFY_END": ("caller_id", "called_did", "call_start"),
    "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "NOTIFY_START": ("pbx_call_id", "caller_id", "call_start"),
    "NOTIFY_END": ("pbx_call_id", "caller_id", "call_start", "disposition"),
    "NOTIFY_OUT_START": ("pbx_call_id", "destination", "call_start"),
    "NOTIFY_OUT_END": ("pbx_call_id", "destination", "call_start", "disposition"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}


def zadarma_signature(api_secret: str, event: str, params: Mapping[str, str]) -> str:
    """The ``Signature`` header Zadarma sends for ``event`` (base64 of the hex HMAC-SHA1)."""
    fields = _SIGNED_FIELDS[event]
    message = "".join(params.get(f, "") for f in fields)
    hex_digest = hmac.new(api_secret.encode(), message.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(hex_digest.encode()).decode()


def _status(disposition: str) -> CallStatus:
    d = disposition.strip().lower()
    if d == "answered":
        return "answered"
    if d in ("no answer", "cancel", "noanswer", "no_answer"):
        return "missed"
    if d == "busy":
        return "busy"
    return "failed"


class ZadarmaAdapter:
    """Inbound hook adapter for Zadarma PBX notifications."""

    kind = "zadarma"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        query = request.query_params()
        if "zd_echo" in query:
            return HookOutcome(response=HookResponse(200, query["zd_echo"].encode()), durable=False)
        if request.method.upper() != "POST":
            raise HookError(400, "Bad request", "Expected a zd_echo check or a POSTed event.")
        require_form(request)
        params = form_dict(form_pairs(request.body))
        event = params.get("event", "").strip().upper()
        if not event:
            raise invalid({"event": "required"})
        if event not in _SIGNED_FIELDS:
            # SMS, NOTIFY_IVR, speech recognition...: nothing we keep and no scheme to check.
            return HookOutcome(durable=False, discarded="ignored")
        self._verify(channel, request, event, params)
        if event not in _REQUIRED:
            return HookOutcome(discarded="ignored")  # NOTIFY_INTERNAL / NOTIFY_ANSWER
        missing = {f: "required" for f in _REQUIRED[event] if not params.get(f, "").strip()}
        if missing:
            raise invalid(missing)
        item = self._item(channel, event, params, now)
        return HookOutcome(items=(item,))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return ()

    # ---- internals --------------------------------------------------------------------------

    @staticmethod
    def _verify(channel: ChannelView, request: RawRequest, event: str, params: Mapping[str, str]) -> None:
        secret = channel.secrets.get("api_secret")
        if not secret:
            raise bad_signature("The channel has no api_secret to verify Zadarma's signature.")
        got = (request.header("signature") or "").strip()
        if not got:
            raise bad_signature("Signature header missing.")
        expected = zadarma_signature(secret, event, params)
        # Also accept base64 of the raw digest, should Zadarma ever fix its PHP-ism.
        message = "".join(params.get(f, "") for f in _SIGNED_FIELDS[event])
        raw = base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha1).digest()).decode()
        if not (constant_time_equal(got, expected) | constant_time_equal(got, raw)):
            raise bad_signature()

    @staticmethod
    def _item(channel: ChannelView, event: str, params: Mapping[str, str], now: datetime) -> Captured:
        call_id = params["pbx_call_id"].strip()
        subject = f"zadarma:call:{call_id}"
        key = f"zadarma:{call_id}:{event}"
        zone = zone_of(channel.config)

        if event == "NOTIFY_RECORD":
            direction: Direction = "out" if call_id.startswith("out_") else "in"
            return recording_item(
                idempotency_key=f"{key}:{params['call_id_with_rec']}",
                subject_key=subject,
                direction=direction,
                occurred_at=utc(now),
                call_id=call_id,
                recording_id=params["call_id_with_rec"],
            )

        started = local_datetime(params["call_start"], zone)
        if started is None:
            raise invalid({"call_start": "expected YYYY-MM-DD HH:MM:SS"})
        outbound = event.startswith("NOTIFY_OUT_")
        direction = "out" if outbound else "in"
        if outbound:
            from_ = params.get("caller_id") or params.get("internal") or None
        else:
            from_ = params.get("caller_id") or None
        to = params.get("destination" if outbound else "called_did") or None
        client = to if outbound else from_

        final = event.endswith("_END")
        status: CallStatus = _status(params["disposition"]) if final else "ringing"
        duration = duration_of(params.get("duration")) if final else None
        if final and params.get("duration", "").strip() and duration is None:
            raise invalid({"duration": "expected a number of seconds"})
        recorded = params.get("is_recorded", "").strip() == "1"
        return Captured(
            idempotency_key=key,
            kind="call",
            direction=direction,
            occurred_at=started,
            sender=Sender(phones=phones(client)),
            summary=call_summary(direction, status, duration),
            data=call_data(
                status=status,
                duration_s=duration,
                recording_url=None,
                from_=from_,
                to=to,
                call_id=call_id,
                internal=params.get("internal") or None,
                disposition=params.get("disposition") or None,
                recording_id=(params.get("call_id_with_rec") or None) if recorded else None,
            ),
            subject_key=subject,
        )


ADAPTER = ZadarmaAdapter()
