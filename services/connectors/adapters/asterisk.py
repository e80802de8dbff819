"""Asterisk: one CDR record, posted as JSON by a PBX bridge in Asterisk's own field names.

Fields: ``uniqueid``, ``linkedid``, ``src``, ``dst``, ``clid``, ``did``, ``start``, ``answer``,
``end``, ``duration``, ``billsec``, ``disposition`` (``ANSWERED``, ``NO ANSWER``, ``BUSY``,
``FAILED``, ``CONGESTION``), plus ``recording_url``. When ``secrets.hmac_secret`` is set the body
must be signed: ``X-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.

Direction: ``config.direction`` (``in``/``out``) when the bridge only posts one kind, else
inferred: a ``did`` means the call came in on one of our numbers; otherwise a short internal
extension (``config.extension_max_len`` digits, default 5) as ``src`` means outbound and as
``dst`` inbound. Times are PBX-local ``YYYY-MM-DD HH:MM:SS`` in ``config.timezone`` (default
Europe/Moscow). All CDRs of one call share ``subject_key = asterisk:call:<linkedid or uniqueid>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._tel_util import (
    call_data,
    call_summary,
    duration_of,
    invalid,
    json_object,
    local_datetime,
    phones,
    require_json,
    text_of,
    zone_of,
)
from .base import (
    CallStatus,
    Captured,
    ChannelView,
    Direction,
    HookOutcome,
    RawRequest,
    Sender,
    require_hmac_header,
)

_DISPOSITIONS: dict[str, CallStatus] = {
    "ANSWERED": "answered",
    "NO ANSWER": "missed",
    "NOANSWER": "missed",
    "CANCEL": "missed",
    "BUSY": "busy",
    "FAILED": "failed",
    "CONGESTION": "failed",
}
_CLID = re.compile(r'^\s*"?(?P<name>[^"<]*?)"?\s*<(?P<number>[^>]*)>\s*$')


def parse_clid(clid: str | None) -> tuple[str | None, str | None]:
    """``"Иван Петров" <79161234567>`` → ``("Иван Петров", "79161234567")``."""
    if not clid:
        return None, None
    m = _CLID.match(clid)
    if not m:
        return None, clid.strip() or None
    return (m.group("name").strip() or None), (m.group("number").strip() or None)


def _is_extension(number: str | None, max_len: int) -> bool:
    return number is not None and number.isascii() and number.isdigit() and len(number) <= max_len


class AsteriskAdapter:
    """Inbound hook adapter for CDRs posted by an Asterisk bridge."""

    kind = "asterisk"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        secret = channel.secrets.get("hmac_secret")
        if secret:
            require_hmac_header(request, secret)
        require_json(request)
        cdr = json_object(request.body)
        return HookOutcome(items=(self._item(channel.config, cdr),))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return ()

    @staticmethod
    def _item(config: Mapping[str, Any], cdr: Mapping[str, Any]) -> Captured:
        uniqueid = text_of(cdr.get("uniqueid"))
        src, dst = text_of(cdr.get("src")), text_of(cdr.get("dst"))
        disposition = text_of(cdr.get("disposition"))
        errors: dict[str, str] = {}
        if uniqueid is None:
            errors["uniqueid"] = "required"
        if src is None and dst is None:
            errors["src"] = "src or dst required"
        if disposition is None:
            errors["disposition"] = "required"
        elif disposition.upper() not in _DISPOSITIONS:
            errors["disposition"] = "expected ANSWERED, NO ANSWER, BUSY, FAILED or CONGESTION"
        zone = zone_of(config)
        started = local_datetime(cdr.get("start"), zone)
        if started is None:
            errors["start"] = "required, YYYY-MM-DD HH:MM:SS"
        if errors:
            raise invalid(errors)
        assert uniqueid is not None and disposition is not None and started is not None

        did = text_of(cdr.get("did"))
        max_len = config.get("extension_max_len")
        max_len = max_len if isinstance(max_len, int) and not isinstance(max_len, bool) else 5
        hint = config.get("direction")
        direction: Direction
        if hint in ("in", "out"):
            direction = hint
        elif did:
            direction = "in"
        elif _is_extension(src, max_len) and not _is_extension(dst, max_len):
            direction = "out"
        else:
            direction = "in"

        clid_name, clid_number = parse_clid(text_of(cdr.get("clid")))
        if direction == "in":
            client, name = src or clid_number, clid_name
        else:
            client, name = dst, None
        status = _DISPOSITIONS[disposition.upper()]
        billsec = duration_of(cdr.get("billsec"))
        duration = billsec if status == "answered" else None
        linked = text_of(cdr.get("linkedid")) or uniqueid
        sequence = text_of(cdr.get("sequence"))
        key = f"asterisk:{uniqueid}" + (f":{sequence}" if sequence else "")
        return Captured(
            idempotency_key=key,
            kind="call",
            direction=direction,
            occurred_at=started,
            sender=Sender(name=name, phones=phones(client)),
            summary=call_summary(direction, status, duration),
            data=call_data(
                status=status,
                duration_s=duration,
                recording_url=text_of(cdr.get("recording_url")),
                from_=src,
                to=dst,
                call_id=uniqueid,
                linked_id=linked,
                did=did,
                disposition=disposition,
                total_duration_s=duration_of(cdr.get("duration")),
                answered_at=_iso(local_datetime(cdr.get("answer"), zone)),
                ended_at=_iso(local_datetime(cdr.get("end"), zone)),
            ),
            subject_key=f"asterisk:call:{linked}",
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


ADAPTER = AsteriskAdapter()
