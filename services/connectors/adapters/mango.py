"""Mango Office virtual PBX (VPBX API) event notifications.

Mango POSTs ``application/x-www-form-urlencoded`` with three fields: ``vpbx_api_key``, ``sign`` and
``json`` (the event as a JSON string), to ``<hook URL>/events/call``, ``/events/summary``,
``/events/recording`` and a few others. ``sign = sha256_hex(api_key + json + api_salt)``, computed
on the ``json`` field exactly as received; ``vpbx_api_key`` must be the channel's ``api_key``.

One call (Mango's ``entry_id``) is one timeline item: ``subject_key = mango:call:<entry_id>``.

- ``/events/call``: per-leg state changes (``Appeared`` → ringing, ``Connected``/``OnHold`` →
  in progress, ``Disconnected`` → no verdict of its own, the summary gives it).
- ``/events/summary``: the final verdict (``entry_result`` 1 = answered, 0 = missed) with times.
- ``/events/recording``: a finished recording's ``recording_id`` (the file is fetched via the API).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._tel_util import (
    call_data,
    call_summary,
    form_dict,
    form_pairs,
    int_of,
    invalid,
    json_value,
    phones,
    recording_item,
    require_form,
    text_of,
    unix_datetime,
    utc,
)
from .base import (
    CallStatus,
    Captured,
    ChannelView,
    Direction,
    HookOutcome,
    RawRequest,
    Sender,
    bad_signature,
    constant_time_equal,
)

_STATES: dict[str, CallStatus | None] = {
    "appeared": "ringing",
    "connected": "in_progress",
    "onhold": "in_progress",
    "disconnected": None,
}


def mango_sign(api_key: str, json_text: str, api_salt: str) -> str:
    """Mango's ``sign``: lower-case hex SHA-256 of ``api_key + json + api_salt``."""
    return hashlib.sha256((api_key + json_text + api_salt).encode()).hexdigest()


def _party(value: Any) -> tuple[str | None, str | None]:
    """``(extension, number)`` of a Mango ``from``/``to`` object."""
    if not isinstance(value, dict):
        return None, None
    return text_of(value.get("extension")), text_of(value.get("number"))


def _event_kind(subpath: str) -> str:
    path = subpath.rstrip("/").lower()
    for kind in ("call", "summary", "recording"):
        if path.endswith(f"/events/{kind}"):
            return kind
    return "other"


class MangoAdapter:
    """Inbound hook adapter for Mango Office VPBX events."""

    kind = "mango"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        require_form(request)
        form = form_dict(form_pairs(request.body))
        json_text = self._verify(channel, form)
        event = json_value(json_text, "The json field")
        if not isinstance(event, dict):
            raise invalid({"json": "must be a JSON object"})

        kind = _event_kind(request.subpath)
        if kind == "call":
            item = self._call(event, now)
        elif kind == "summary":
            item = self._summary(event, now)
        elif kind == "recording":
            item = self._recording(event, now)
        else:
            item = None  # dtmf, sms, ping...: signed and valid, nothing to keep
        if item is None:
            return HookOutcome(discarded="ignored")
        return HookOutcome(items=(item,))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return ()

    # ---- internals --------------------------------------------------------------------------

    @staticmethod
    def _verify(channel: ChannelView, form: Mapping[str, str]) -> str:
        api_key = channel.secrets.get("api_key")
        salt = channel.secrets.get("api_salt")
        if not api_key or not salt:
            raise bad_signature("The channel has no api_key/api_salt to verify Mango's sign.")
        got_key = form.get("vpbx_api_key", "")
        sign = form.get("sign", "").strip().lower()
        if not got_key or not sign:
            raise bad_signature("vpbx_api_key or sign missing.")
        if not constant_time_equal(got_key, api_key):
            raise bad_signature("vpbx_api_key does not match the channel.")
        json_text = form.get("json")
        if json_text is None:
            raise bad_signature("json field missing: nothing was signed.")
        if not constant_time_equal(sign, mango_sign(api_key, json_text, salt)):
            raise bad_signature()
        return json_text

    @staticmethod
    def _required(event: Mapping[str, Any], *names: str) -> dict[str, str]:
        values = {n: text_of(event.get(n)) for n in names}
        missing = {n: "required" for n, v in values.items() if v is None}
        if missing:
            raise invalid(missing)
        return {n: v for n, v in values.items() if v is not None}

    def _call(self, event: Mapping[str, Any], now: datetime) -> Captured | None:
        req = self._required(event, "entry_id", "call_id", "call_state")
        state = req["call_state"]
        if state.lower() not in _STATES:
            raise invalid({"call_state": "unknown call state"})
        status = _STATES[state.lower()]
        from_ext, from_num = _party(event.get("from"))
        to_ext, to_num = _party(event.get("to"))
        if from_ext and to_ext:
            return None  # employee to employee
        direction: Direction = "out" if from_ext else "in"
        client = to_num if direction == "out" else from_num
        seq = text_of(event.get("seq")) or text_of(event.get("timestamp")) or state
        occurred = unix_datetime(event.get("timestamp")) or utc(now)
        summary = call_summary(direction, status, None)
        if status is None:
            summary += " ended"
        return Captured(
            idempotency_key=f"mango:{req['entry_id']}:{req['call_id']}:{seq}",
            kind="call",
            direction=direction,
            occurred_at=occurred,
            sender=Sender(phones=phones(client)),
            summary=summary,
            data=call_data(
                status=status,
                duration_s=None,
                recording_url=None,
                from_=from_num or from_ext,
                to=to_num or to_ext,
                call_id=req["entry_id"],
                leg_id=req["call_id"],
                state=state,
                extension=(to_ext if direction == "in" else from_ext),
                disconnect_reason=text_of(event.get("disconnect_reason")),
            ),
            subject_key=f"mango:call:{req['entry_id']}",
        )

    def _summary(self, event: Mapping[str, Any], now: datetime) -> Captured | None:
        req = self._required(event, "entry_id", "call_direction", "entry_result")
        call_direction = int_of(event.get("call_direction"))
        if call_direction not in (0, 1, 2):
            raise invalid({"call_direction": "expected 0, 1 or 2"})
        if call_direction == 0:
            return None  # internal call between employees
        direction: Direction = "in" if call_direction == 1 else "out"
        result = int_of(event.get("entry_result"))
        if result not in (0, 1):
            raise invalid({"entry_result": "expected 0 or 1"})
        status: CallStatus = "answered" if result == 1 else "missed"
        from_ext, from_num = _party(event.get("from"))
        to_ext, to_num = _party(event.get("to"))
        client = from_num if direction == "in" else to_num
        created = unix_datetime(event.get("create_time"))
        talk = int_of(event.get("talk_time"))
        end = int_of(event.get("end_time"))
        duration = max(end - talk, 0) if status == "answered" and talk and end else None
        return Captured(
            idempotency_key=f"mango:{req['entry_id']}:summary",
            kind="call",
            direction=direction,
            occurred_at=created or unix_datetime(event.get("end_time")) or utc(now),
            sender=Sender(phones=phones(client)),
            summary=call_summary(direction, status, duration),
            data=call_data(
                status=status,
                duration_s=duration,
                recording_url=None,
                from_=from_num or from_ext,
                to=to_num or to_ext,
                call_id=req["entry_id"],
                line_number=text_of(event.get("line_number")),
                extension=(to_ext if direction == "in" else from_ext),
                disconnect_reason=text_of(event.get("disconnect_reason")),
            ),
            subject_key=f"mango:call:{req['entry_id']}",
        )

    def _recording(self, event: Mapping[str, Any], now: datetime) -> Captured | None:
        req = self._required(event, "entry_id", "recording_id")
        state = (text_of(event.get("recording_state")) or "Completed").lower()
        if state != "completed":
            return None
        return recording_item(
            idempotency_key=f"mango:{req['entry_id']}:recording:{req['recording_id']}",
            subject_key=f"mango:call:{req['entry_id']}",
            direction="in",
            occurred_at=unix_datetime(event.get("timestamp")) or utc(now),
            call_id=req["entry_id"],
            leg_id=text_of(event.get("call_id")),
            recording_id=req["recording_id"],
        )


ADAPTER = MangoAdapter()
