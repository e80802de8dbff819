"""Adapter output → the ``interaction.captured`` payload: E.164 phones, lower-case emails, clean text."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python

from services.connectors.adapters.base import Captured
from shared.events import InteractionCaptured, SenderData
from shared.normalize import UTM_KEYS, clean_text, normalize_email, normalize_phone


def normalise(item: Captured, channel: dict[str, Any], region: str) -> InteractionCaptured:
    phones: list[str] = []
    raw_phones: list[str] = []
    for raw in item.sender.phones:
        e164 = normalize_phone(str(raw), region).e164
        if e164:
            if e164 not in phones:
                phones.append(e164)
        elif (text := clean_text(str(raw), 64)) and text not in raw_phones:
            raw_phones.append(text)
    emails: list[str] = []
    for raw in item.sender.emails:
        norm = normalize_email(str(raw))
        if norm and norm not in emails:
            emails.append(norm)
    utm = {k: clean_text(str(v), 500) or "" for k, v in item.utm.items() if k in UTM_KEYS and v}
    data = to_jsonable_python(item.data)
    if utm and "utm" not in data:
        data["utm"] = utm
    data.pop("thread", None)  # only the adapter's own Thread names where an answer goes
    if item.thread is not None:  # what the conversations part keys and answers a thread by
        data["thread"] = {"key": item.thread.key, "address": to_jsonable_python(item.thread.address)}
    if item.provider_message_id:
        data["provider_message_id"] = item.provider_message_id
    return InteractionCaptured(
        channel_id=channel["_id"],
        channel_kind=channel["kind"],
        intake=channel.get("intake", "inbox"),
        channel_owner_id=channel.get("owner_id"),
        kind=item.kind,
        direction=item.direction,
        occurred_at=item.occurred_at,
        sender=SenderData(
            name=clean_text(item.sender.name, 300) or None,
            phones=phones,
            raw_phones=raw_phones,
            emails=emails,
            handles=[
                h for h in dict.fromkeys(clean_text(str(x), 100) or "" for x in item.sender.handles) if h
            ],
        ),
        summary=clean_text(item.summary, 500) or "",
        data=data,
        utm={k: v for k, v in utm.items() if v},
        subject_key=item.subject_key,
    )
