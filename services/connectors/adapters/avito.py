"""Avito Messenger webhooks (API v3: ``POST /messenger/v3/webhook {"url"}`` subscribes a URL).

Avito posts ``{"id", "version", "timestamp", "payload": {"type": "message", "value": {"id",
"chat_id", "user_id", "author_id", "created", "type", "chat_type", "content": {...}, "item_id",
"published_at", "read"}}}`` and signs nothing. The hook URL is the channel's secret instead, as
for the other unsigned kinds: with ``secrets.token`` set, the URL given to Avito must carry it
(``<webhook_url>?token=<token>``; ``X-CRM-Token`` works too) and anything else is 401; without
it the channel's health says the hook is unauthenticated.

- A message from the client (``author_id`` is not the channel's ``config.user_id``) is one
  ``message``, direction ``in``, keyed ``avito:<message id>``, handle ``avito:<author_id>``,
  thread ``chat:<chat_id>`` answered ``{"chat_id", "user_id", "item_id", "handles"}``; the listing's
  ``item_id`` is kept on the message data.
- Our side's messages (``author_id`` = ``config.user_id``: answers written in Avito, or the echo
  of one the hub sent) are accepted and create nothing: the webhook does not name the client
  they went to, and the hub already has its own answers.
- System messages (``type: system``, ``author_id`` 0, ``chat_type: a2u``: Avito's own notices),
  deletions, other payload types and messages for another account are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import _form_util as fu
from .base import Captured, ChannelView, HookOutcome, RawRequest, Sender, Thread

IGNORED_TYPES = frozenset({"system", "deleted"})
LABELS = {"image": "image", "voice": "voice message", "call": "call", "file": "file", "video": "video"}


def _id(value: Any) -> str | None:
    """An Avito numeric id (user, item) as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 32:
        return value.strip()
    return None


def _t(value: Any, limit: int = 1000) -> str | None:
    return fu.clean_text(fu.scalar_text(value), limit) or None


def _largest(sizes: Mapping[str, Any]) -> str | None:
    def area(key: str) -> int:
        w, _, h = key.partition("x")
        return int(w) * int(h) if w.isdigit() and h.isdigit() else 0

    keys = sorted((k for k in sizes if isinstance(sizes.get(k), str)), key=area)
    return _t(sizes[keys[-1]]) if keys else None


def content_of(kind: str, content: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``(text, summary, details)`` of a message's ``content``."""
    text = _t(content.get("text"), fu.MAX_VALUE_CHARS) or ""
    details: dict[str, Any] = {"attachments": []}
    if kind == "image":
        details["attachments"].append(
            {"type": "image", "url": _largest(fu.obj(fu.obj(content.get("image")).get("sizes")))}
        )
    elif kind == "voice":
        details["attachments"].append(
            {"type": "voice", "voice_id": _t(fu.obj(content.get("voice")).get("voice_id"), 200)}
        )
    elif kind == "link":
        link = fu.obj(content.get("link"))
        text = text or _t(link.get("text")) or _t(link.get("url")) or ""
        details["link"] = {"url": _t(link.get("url")), "text": _t(link.get("text"))}
    elif kind == "item":
        item = fu.obj(content.get("item"))
        details["item"] = {k: _t(item.get(k)) for k in ("title", "item_url", "price_string") if item.get(k)}
    elif kind == "location":
        loc = fu.obj(content.get("location"))
        details["location"] = {k: loc[k] for k in ("lat", "lon") if isinstance(loc.get(k), int | float)}
        details["location"]["text"] = _t(loc.get("text") or loc.get("title"), 500)
    elif kind == "call":
        details["call"] = {"status": _t(fu.obj(content.get("call")).get("status"), 50)}
    if text:
        summary = " ".join(text.split())[:200]
    elif kind == "item" and details["item"].get("title"):
        summary = f"[listing] {details['item']['title']}"
    elif kind == "location" and details["location"].get("text"):
        summary = f"[location] {details['location']['text']}"
    elif kind == "call":
        status = details["call"]["status"]
        summary = f"[{status} call]" if status else "[call]"
    else:
        summary = f"[{LABELS.get(kind, kind or 'message')}]"
    return text, summary, details


class AvitoAdapter:
    """Adapter for ``kind = "avito"``."""

    kind = "avito"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        fu.require_token(channel, request)
        body = fu.require_json(request)
        payload = body.get("payload")
        if not isinstance(payload, Mapping):
            raise fu.invalid({"payload": "payload must be an object."})
        if payload.get("type") != "message":
            return HookOutcome(response=fu.json_response(b'{"ok":true}'), discarded="ignored")
        value = payload.get("value")
        if not isinstance(value, Mapping):
            raise fu.invalid({"payload.value": "value must be an object."})
        msg_id = _t(value.get("id"), 200)
        chat_id = _t(value.get("chat_id"), 200)
        author = _id(value.get("author_id"))
        errors = {}
        if not msg_id:
            errors["payload.value.id"] = "id is required."
        if not chat_id:
            errors["payload.value.chat_id"] = "chat_id is required."
        if author is None:
            errors["payload.value.author_id"] = "author_id must be a numeric user id."
        if errors:
            raise fu.invalid(errors)
        assert msg_id and chat_id and author is not None
        ours = _id(channel.config.get("user_id"))
        account = _id(value.get("user_id"))
        kind = _t(value.get("type"), 50) or ""
        ignored = (
            (ours is not None and account is not None and account != ours)  # another account's hook
            or author in ("0", ours, account)  # Avito itself, or our own side
            or kind in IGNORED_TYPES
            or value.get("chat_type") == "a2u"
        )
        if ignored:
            return HookOutcome(response=fu.json_response(b'{"ok":true}'), discarded="ignored")
        return HookOutcome(
            response=fu.json_response(b'{"ok":true}'),
            items=(self._item(value, msg_id, chat_id, author, kind, ours or account, now),),
        )

    @staticmethod
    def _item(
        value: Mapping[str, Any],
        msg_id: str,
        chat_id: str,
        author: str,
        kind: str,
        user_id: str | None,
        now: datetime,
    ) -> Captured:
        text, summary, details = content_of(kind, fu.obj(value.get("content")))
        item_id = _id(value.get("item_id"))
        msg_key = fu.safe_id(msg_id, 200)
        data: dict[str, Any] = {
            "text": text,
            "type": kind or None,
            "chat_id": chat_id,
            "chat_type": _t(value.get("chat_type"), 10),
            "item_id": item_id,
            "item_url": f"https://www.avito.ru/{item_id}" if item_id else None,
            "avito_user_id": author,
            "message_id": msg_key,
            **details,
        }
        when = value.get("created") if value.get("created") is not None else value.get("published_at")
        return Captured(
            idempotency_key=f"avito:{msg_key}",
            kind="message",
            direction="in",
            occurred_at=fu.parse_time(when, now),
            sender=Sender(handles=(f"avito:{author}",)),
            summary=f"Avito: {summary}",
            data=data,
            thread=Thread(
                key=f"chat:{chat_id}",
                # ``handles``: the client our answers on it go to (the webhook of our own
                # messages does not name them), so an answer is filed on the client's card
                address={
                    "chat_id": chat_id,
                    "user_id": user_id,
                    "item_id": item_id,
                    "handles": [f"avito:{author}"],
                },
            ),
            provider_message_id=msg_key,
        )

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return outcome.items


ADAPTER = AvitoAdapter()
