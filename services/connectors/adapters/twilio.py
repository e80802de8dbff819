"""Twilio Voice: call status callbacks, ``<Dial action>`` callbacks and recording status callbacks.

Signature (``X-Twilio-Signature``): base64 of HMAC-SHA1, keyed with the account's auth token
(``secrets.auth_token``), over the full URL Twilio called followed by every POST parameter, sorted
by name, written as ``name + value``. For ``GET`` callbacks the parameters are in the URL already
and nothing is appended.

One call is one timeline item: every event carries ``subject_key = twilio:call:<CallSid>`` of the
*parent* call, so the ``<Dial>`` leg (which has ``ParentCallSid``) joins the inbound call it
belongs to. A ``<Dial>`` leg that ends ``no-answer``/``busy``/``failed``/``canceled`` is a missed
call. ``data.leg`` says which leg an event is about (``parent``, ``dial``) so the timeline can
prefer the dial leg's verdict over the parent's plain ``completed``.

Direction: ``Direction=inbound`` is ``in`` (client = ``From``) unless ``From`` is our own side (a
``client:``/``sip:`` agent, or one of ``config.numbers``), then ``out`` (client = ``To``); a
``<Dial>`` leg is ``in`` unless its ``From`` is our own side.

Twilio ignores the body of the answer to a status callback; an empty ``<Response/>`` is also the
right answer to a ``<Dial action>`` request once the dialled party has hung up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ._tel_util import (
    call_data,
    call_summary,
    duration_of,
    form_dict,
    form_pairs,
    invalid,
    phones,
    recording_item,
    require_form,
    utc,
)
from .base import (
    CallStatus,
    Captured,
    ChannelView,
    Direction,
    HookOutcome,
    HookResponse,
    RawRequest,
    Sender,
    bad_signature,
    constant_time_equal,
)

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'

_NON_FINAL: dict[str, CallStatus] = {
    "queued": "ringing",
    "initiated": "ringing",
    "ringing": "ringing",
    "in-progress": "in_progress",
    "answered": "in_progress",
}
_UNANSWERED = {"no-answer", "busy", "failed", "canceled"}


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` Twilio computes for ``url`` and POST ``params``."""
    payload = url
    for name in sorted({k for k, _ in params}):
        for value in sorted({v for k, v in params if k == name}):
            payload += name + value
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _status(raw: str, *, dial_leg: bool, direction: Direction) -> CallStatus | None:
    raw = raw.lower()
    if raw in _NON_FINAL:
        return _NON_FINAL[raw]
    if raw == "completed":
        return "answered"
    if raw in _UNANSWERED:
        if dial_leg and direction == "in":
            return "missed"  # nobody of ours picked up the client's call
        if raw in ("no-answer", "canceled"):
            return "missed"
        return "busy" if raw == "busy" else "failed"
    return None


def _occurred_at(params: Mapping[str, str], now: datetime) -> datetime:
    stamp = params.get("Timestamp")
    if stamp:
        try:
            parsed = parsedate_to_datetime(stamp)
            if parsed.tzinfo is not None:
                return utc(parsed)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return utc(now)


def _is_ours(address: str | None, config: Mapping[str, Any]) -> bool:
    """Our own side: a Twilio Client / SIP agent, or one of ``config.numbers`` (our numbers)."""
    if not address:
        return False
    if address.lower().startswith(("client:", "sip:")):
        return True
    numbers = config.get("numbers")
    return isinstance(numbers, list | tuple) and address in {str(n) for n in numbers}


class TwilioAdapter:
    """Inbound hook adapter for Twilio Voice callbacks."""

    kind = "twilio"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        if request.method.upper() == "GET":
            pairs = list(request.query_params().items())
            signed: list[tuple[str, str]] = []
        else:
            require_form(request)
            pairs = form_pairs(request.body)
            signed = pairs
        self._verify(channel, request, signed)
        params = form_dict(pairs)

        call_sid = params.get("CallSid", "").strip()
        if not call_sid:
            raise invalid({"CallSid": "required"})
        if params.get("RecordingSid") and not params.get("CallStatus"):
            item = self._recording(params, call_sid, now)
        else:
            item = self._call(channel, params, call_sid, now)
        ok = HookResponse(200, EMPTY_TWIML, "text/xml")
        if item is None:
            return HookOutcome(response=ok, discarded="ignored")
        return HookOutcome(response=ok, items=(item,))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return ()

    # ---- internals --------------------------------------------------------------------------

    @staticmethod
    def _verify(channel: ChannelView, request: RawRequest, params: list[tuple[str, str]]) -> None:
        token = channel.secrets.get("auth_token")
        if not token:
            raise bad_signature("The channel has no auth_token to verify Twilio's signature.")
        got = (request.header("x-twilio-signature") or "").strip()
        if not got:
            raise bad_signature("X-Twilio-Signature header missing.")
        if not constant_time_equal(got, twilio_signature(token, request.url, params)):
            raise bad_signature()

    def _call(
        self, channel: ChannelView, params: Mapping[str, str], call_sid: str, now: datetime
    ) -> Captured | None:
        dial_status = params.get("DialCallStatus", "").strip()
        raw_status = dial_status or params.get("CallStatus", "").strip()
        if not raw_status:
            raise invalid({"CallStatus": "required"})
        parent_sid = params.get("ParentCallSid", "").strip() or None
        raw_direction = params.get("Direction", "").strip().lower()
        from_, to = params.get("From") or None, params.get("To") or None

        # The <Dial> leg: its own status callback, or the parent's <Dial action> request.
        leg = "dial" if parent_sid or dial_status else "parent"
        direction: Direction
        if parent_sid:
            # Dialling passes the caller's number on as From unless we placed the call ourselves.
            direction = "out" if _is_ours(from_, channel.config) else "in"
        elif raw_direction == "inbound" and not _is_ours(from_, channel.config):
            direction = "in"
        else:
            # outbound-api / outbound-dial, or a browser (client:) / SIP agent calling out.
            direction = "out"
        client = from_ if direction == "in" else to

        status = _status(raw_status, dial_leg=leg == "dial", direction=direction)
        if status is None:
            raise invalid({"CallStatus": "unknown call status"})
        if dial_status:
            duration = duration_of(params.get("DialCallDuration"))
            key = f"twilio:{call_sid}:dial:{params.get('DialCallSid') or dial_status}"
        else:
            duration = duration_of(params.get("CallDuration"))
            seq = params.get("SequenceNumber", "").strip()
            key = f"twilio:{call_sid}:{seq}" if seq else f"twilio:{call_sid}:{raw_status}"
        if status == "ringing":
            duration = None

        name = params.get("CallerName") if direction == "in" else None
        return Captured(
            idempotency_key=key,
            kind="call",
            direction=direction,
            occurred_at=_occurred_at(params, now),
            sender=Sender(name=name or None, phones=phones(client)),
            summary=call_summary(direction, status, duration),
            data=call_data(
                status=status,
                duration_s=duration,
                recording_url=params.get("RecordingUrl") or None,
                from_=from_,
                to=to,
                call_id=call_sid,
                parent_call_id=parent_sid,
                dial_call_id=params.get("DialCallSid") or None,
                leg=leg,
                provider_status=raw_status,
            ),
            subject_key=f"twilio:call:{parent_sid or call_sid}",
        )

    @staticmethod
    def _recording(params: Mapping[str, str], call_sid: str, now: datetime) -> Captured | None:
        recording_sid = params.get("RecordingSid", "").strip()
        rec_status = params.get("RecordingStatus", "").strip().lower()
        url = params.get("RecordingUrl") or None
        if rec_status and rec_status != "completed":
            return None  # in-progress / absent / failed recordings add nothing to the call
        if not url:
            raise invalid({"RecordingUrl": "required for a completed recording"})
        direction: Direction = "out" if params.get("Direction", "").startswith("outbound") else "in"
        return recording_item(
            idempotency_key=f"twilio:{call_sid}:recording:{recording_sid}",
            subject_key=f"twilio:call:{params.get('ParentCallSid') or call_sid}",
            direction=direction,
            occurred_at=_occurred_at(params, now),
            call_id=call_sid,
            recording_url=url,
            recording_id=recording_sid,
            recording_duration_s=duration_of(params.get("RecordingDuration")),
        )


ADAPTER = TwilioAdapter()
