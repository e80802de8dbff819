"""What one WhatsApp Cloud API message says: its text, a one-line summary and its details.

The shapes are the ``messages[]`` objects of Meta's ``messages`` webhook reference:
``text.body``; ``image|video|document|audio|sticker`` ``{id, mime_type, sha256, caption?,
filename?, voice?, animated?}`` (the media itself is fetched later by id, not here);
``location {latitude, longitude, name?, address?, url?}``; ``contacts [{name.formatted_name,
phones[{phone, wa_id}], emails[{email}]}]``; ``button {text, payload}`` (a template's quick reply);
``interactive {type: button_reply|list_reply|nfm_reply, ...}``; ``reaction {message_id, emoji}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _form_util as fu

MEDIA = ("image", "video", "document", "audio", "sticker")
PREVIEW = 100


def _t(value: Any, limit: int = fu.MAX_VALUE_CHARS) -> str:
    return fu.clean_text(fu.scalar_text(value), limit)


def _preview(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= PREVIEW else one_line[: PREVIEW - 1] + "…"


def _media(kind: str, msg: Mapping[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    media = fu.obj(msg.get(kind))
    attachment: dict[str, Any] = {"type": kind, "id": _t(media.get("id"), 200) or None}
    attachment["mime_type"] = _t(media.get("mime_type"), 200) or None
    for key in ("sha256", "filename"):
        if media.get(key):
            attachment[key] = _t(media[key], 300)
    if kind == "audio" and media.get("voice") is True:
        attachment["voice"] = True
    caption = _t(media.get("caption")) or None
    if caption:
        attachment["caption"] = caption
    label = "voice message" if attachment.get("voice") else kind
    if kind == "document" and attachment.get("filename"):
        label = f"document {attachment['filename']}"
    summary = f"[{label}] {_preview(caption)}" if caption else f"[{label}]"
    return caption, summary, {"attachments": [attachment]}


def _location(msg: Mapping[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    loc = fu.obj(msg.get("location"))
    place: dict[str, Any] = {}
    for key in ("latitude", "longitude"):
        value = loc.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            place[key] = float(value)
    for key in ("name", "address", "url"):
        if loc.get(key):
            place[key] = _t(loc[key], 500)
    label = place.get("name") or place.get("address")
    if not label and "latitude" in place and "longitude" in place:
        label = f"{place['latitude']:.5f}, {place['longitude']:.5f}"
    return None, f"[location] {label}" if label else "[location]", {"location": place}


def _contacts(msg: Mapping[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    cards: list[dict[str, Any]] = []
    for card in fu.lst(msg.get("contacts"))[:20]:
        card = fu.obj(card)
        name = fu.obj(card.get("name"))
        full = _t(name.get("formatted_name"), 200) or " ".join(
            p for p in (_t(name.get("first_name"), 100), _t(name.get("last_name"), 100)) if p
        )
        phones = [_t(fu.obj(p).get("phone"), 64) for p in fu.lst(card.get("phones"))[:10]]
        emails = [_t(fu.obj(e).get("email"), 254) for e in fu.lst(card.get("emails"))[:10]]
        cards.append(
            {"name": full or None, "phones": [p for p in phones if p], "emails": [e for e in emails if e]}
        )
    names = ", ".join(c["name"] for c in cards if c["name"])
    return None, f"[contact] {_preview(names)}" if names else "[contact]", {"shared_contacts": cards}


def _interactive(msg: Mapping[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    inter = fu.obj(msg.get("interactive"))
    kind = _t(inter.get("type"), 50)
    reply = fu.obj(inter.get(kind)) if kind else {}
    title = _t(reply.get("title"), 1000)
    detail: dict[str, Any] = {"reply": {"type": kind or None, "id": _t(reply.get("id"), 300) or None}}
    if title:
        detail["reply"]["title"] = title
    if reply.get("description"):
        detail["reply"]["description"] = _t(reply["description"], 1000)
    if kind == "nfm_reply":  # a WhatsApp Flow's answer: keep the submitted JSON as text
        detail["reply"]["response_json"] = _t(reply.get("response_json"))
        title = title or _t(reply.get("body"), 1000)
    text = title or None
    return text, f"[reply] {_preview(title)}" if title else "[reply]", detail


def content_of(kind: str, msg: Mapping[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    """``(text, summary, details)``; ``details`` may hold ``attachments`` and the kind's own data."""
    if kind == "text":
        body = _t(fu.obj(msg.get("text")).get("body"))
        return body, _preview(body) if body else "[empty message]", {}
    if kind in MEDIA:
        return _media(kind, msg)
    if kind == "location":
        return _location(msg)
    if kind == "contacts":
        return _contacts(msg)
    if kind == "button":
        button = fu.obj(msg.get("button"))
        text = _t(button.get("text"), 1000)
        detail = {"reply": {"type": "button", "payload": _t(button.get("payload"), 1000) or None}}
        return text or None, f"[reply] {_preview(text)}" if text else "[reply]", detail
    if kind == "interactive":
        return _interactive(msg)
    if kind == "reaction":
        reaction = fu.obj(msg.get("reaction"))
        emoji = _t(reaction.get("emoji"), 20)
        detail = {"reaction": {"message_id": _t(reaction.get("message_id"), 200) or None, "emoji": emoji}}
        return None, f"[reaction] {emoji}" if emoji else "[reaction removed]", detail
    return None, f"[{_t(kind, 50) or 'unsupported'}]", {}
