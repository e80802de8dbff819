"""One VK community message (Callback API ``message_new`` / ``message_reply``) as a ``message``.

``message_new``: ``object.message`` (the object itself before API 5.103): ``{id,
conversation_message_id, date, from_id, peer_id, text, attachments[], geo?, random_id?}``. The
client writes to the community: direction ``in``, sender handle ``vk:<from_id>``.

``message_reply``: the object is the message the community sent (``out: 1``, ``from_id`` =
``-<group_id>``, ``admin_author_id`` = the manager who wrote it in VK). It is our side's answer:
direction ``out``, about the client ``vk:<peer_id>``. When the hub itself sent it
(``messages.send``), its ``id`` is the :class:`SendResult` id and its ``random_id`` the one the
sender derived from the outbound idempotency key, so the conversation recognises its own answer
and keeps one copy.

Both: thread ``peer:<peer_id>`` answered ``{"peer_id": peer_id}``; provider message id the VK
message id (``<peer_id>_<conversation_message_id>`` when VK gives no id, as in group chats);
attachments summarised (type plus a few safe fields each; the files stay at VK).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import _form_util as fu
from .base import Captured, Direction, Thread

CHAT_PEER_OFFSET = 2_000_000_000
MAX_ATTACHMENTS = 20


def int_id(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 32:
        return value.strip()
    return None


def _t(value: Any, limit: int = 500) -> str | None:
    return fu.clean_text(fu.scalar_text(value), limit) or None


def _largest_photo(photo: Mapping[str, Any]) -> str | None:
    best, best_area = None, -1
    for size in fu.lst(photo.get("sizes")):
        size = fu.obj(size)
        w, h = size.get("width"), size.get("height")
        area = w * h if isinstance(w, int) and isinstance(h, int) else 0
        if size.get("url") and area > best_area:
            best, best_area = size.get("url"), area
    return _t(best, 1000)


def attachment_summary(att: Mapping[str, Any]) -> dict[str, Any]:
    kind = _t(att.get("type"), 50) or "unknown"
    body = fu.obj(att.get(kind))
    out: dict[str, Any] = {"type": kind}
    if kind == "photo":
        out["url"] = _largest_photo(body)
    elif kind == "doc":
        out.update(title=_t(body.get("title")), ext=_t(body.get("ext"), 20), url=_t(body.get("url"), 1000))
    elif kind == "audio_message":
        out.update(duration_s=body.get("duration") if isinstance(body.get("duration"), int) else None)
        out["url"] = _t(body.get("link_ogg") or body.get("link_mp3"), 1000)
    elif kind == "sticker":
        out["sticker_id"] = int_id(body.get("sticker_id"))
    elif kind == "link":
        out.update(url=_t(body.get("url"), 1000), title=_t(body.get("title")))
    elif kind in ("video", "audio", "market", "wall"):
        out["title"] = _t(body.get("title") or body.get("text"), 200)
    return {k: v for k, v in out.items() if v is not None}


def message_item(
    event_type: str, key: str, msg: Mapping[str, Any], group_id: str | None, now: datetime
) -> Captured:
    """The message; raises ``fu.invalid`` when it names no sender or id."""
    outgoing = event_type == "message_reply"
    from_id = int_id(msg.get("from_id"))
    peer_id = int_id(msg.get("peer_id")) or (None if outgoing else from_id)
    if from_id is None and not outgoing:
        raise fu.invalid({"object.message.from_id": "from_id is required."})
    if peer_id is None:
        raise fu.invalid({"object.peer_id": "peer_id is required."})
    msg_id = int_id(msg.get("id"))
    conv_id = int_id(msg.get("conversation_message_id"))
    if msg_id in (None, "0") and conv_id is None:
        raise fu.invalid({"object.message.id": "id or conversation_message_id is required."})
    text = fu.clean_text(str(msg.get("text") or ""))
    attachments = [attachment_summary(fu.obj(a)) for a in fu.lst(msg.get("attachments"))[:MAX_ATTACHMENTS]]
    kinds = [a["type"] for a in attachments]
    if text:
        summary = text[:200]
    elif kinds:
        summary = "[" + ", ".join(dict.fromkeys(kinds)) + "]"
    else:
        summary = "[empty message]"
    # the client: who wrote (inbound), or whom the community answered (outbound, a private chat)
    client = peer_id if outgoing else from_id
    is_person = client is not None and 0 < int(client) < CHAT_PEER_OFFSET
    provider_id = msg_id if msg_id not in (None, "0") else f"{peer_id}_{conv_id}"
    direction: Direction = "out" if outgoing else "in"
    data: dict[str, Any] = {
        "text": text,
        "channel": "vk",
        "vk_user_id": client if is_person else None,
        "peer_id": peer_id,
        "message_id": msg_id,
        "conversation_message_id": conv_id,
        "group_id": group_id,
        "attachments": attachments,
        "profile_url": f"https://vk.com/id{client}" if is_person else None,
    }
    geo = fu.obj(msg.get("geo"))
    if geo:
        coords = fu.obj(geo.get("coordinates"))
        data["location"] = {
            k: coords[k] for k in ("latitude", "longitude") if isinstance(coords.get(k), int | float)
        }
    if outgoing:
        data["random_id"] = int_id(msg.get("random_id"))
        data["admin_author_id"] = int_id(msg.get("admin_author_id"))
    return Captured(
        idempotency_key=key,
        kind="message",
        direction=direction,
        occurred_at=fu.parse_time(msg.get("date"), now),
        sender=fu.build_sender(None, [], [], [f"vk:{client}"] if is_person else []),
        summary=summary,
        data=data,
        thread=Thread(key=f"peer:{peer_id}", address={"peer_id": int(peer_id)}),
        provider_message_id=provider_id,
    )
