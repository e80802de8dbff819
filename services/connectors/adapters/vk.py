"""VK (vk.com) Callback API for a community.

Every event is ``POST`` JSON ``{"type", "object", "group_id", "event_id"?, "v"?, "secret"?}``.

* ``confirmation``: answered with ``secrets.confirmation`` as plain text, exactly, even though the
  handshake carries no ``secret`` (nothing durable). When ``config.group_id`` is set the handshake's
  ``group_id`` must match it.
* Any other type: ``secret`` must equal ``secrets.secret``, which is required (else 401) and the
  answer is exactly ``ok`` (VK retries anything else).
* ``lead_forms_new`` (object: ``lead_id``, ``group_id``, ``user_id``, ``form_id``, ``form_name``,
  ``ad_id``?, ``answers`` ``[{key, question, answer}]``) → an ``ad_lead``: standard question keys
  ``first_name``/``patronymic_name``/``last_name``/``phone_number``/``email`` give the sender; every
  answer is kept in ``data.fields`` under its question text (else key).
* ``message_new`` (``object.message``, or the object itself in API versions before 5.103:
  ``from_id``, ``peer_id``, ``text``, ``date``, ``id``, ``conversation_message_id``) → an inbound
  ``message``; ``message_reply`` (the community's own answer, written in VK or sent by the hub)
  → an outbound one, on the thread ``peer:<peer_id>`` (see ``_vk_message``). A message naming no
  person (another community's bot in a chat, our answer in a group chat) creates nothing.
* Other types → ``ok`` with ``discarded="ignored"``.

The VK user id is in ``data.vk_user_id`` (with ``data.profile_url``). Idempotency key
``vk:<event_id>`` when VK sends one, else ``vk:<type>:<group_id>:<lead_id | message id>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import _form_util as fu
from ._vk_message import int_id as _int_id
from ._vk_message import message_item
from .base import (
    Captured,
    ChannelView,
    HookError,
    HookOutcome,
    RawRequest,
    bad_signature,
    constant_time_equal,
)


def _answer_text(answer: Any) -> str:
    if isinstance(answer, list):
        parts = [
            fu.scalar_text(a.get("value") or a.get("key")) if isinstance(a, Mapping) else fu.scalar_text(a)
            for a in answer
        ]
        return ", ".join(p for p in parts if p)
    if isinstance(answer, Mapping):
        return fu.scalar_text(answer.get("value") or answer.get("key"))
    return fu.scalar_text(answer)


class VkAdapter:
    """Adapter for ``kind = "vk"``."""

    kind = "vk"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        body = fu.require_json(request)
        event_type = body.get("type")
        group_id = _int_id(body.get("group_id"))
        expected_group = _int_id(channel.config.get("group_id"))

        if event_type == "confirmation":
            if expected_group and group_id != expected_group:
                raise bad_signature("group_id does not match the channel's community.")
            confirmation = channel.secrets.get("confirmation")
            if not confirmation:
                raise HookError(
                    422,
                    "Confirmation not configured",
                    "Set secrets.confirmation to the string VK shows in the community settings.",
                    {"confirmation": "secrets.confirmation is not set."},
                )
            return HookOutcome(response=fu.text_response(confirmation), durable=False)

        secret = channel.secrets.get("secret")
        if not secret:  # VK signs every call with it: without one, anybody could post leads
            raise bad_signature("Set secrets.secret to the Callback API secret key of the community.")
        got = body.get("secret")
        if not isinstance(got, str) or not constant_time_equal(got, secret):
            raise bad_signature("secret does not match the channel's Callback API secret.")
        if expected_group and group_id != expected_group:
            raise bad_signature("group_id does not match the channel's community.")
        if not isinstance(event_type, str) or not event_type:
            raise fu.invalid({"type": "type is required."})

        obj = body.get("object")
        if event_type == "lead_forms_new":
            if not isinstance(obj, Mapping):
                raise fu.invalid({"object": "object must be an object."})
            item = self._lead(body, obj, group_id, now)
        elif event_type in ("message_new", "message_reply"):
            if not isinstance(obj, Mapping):
                raise fu.invalid({"object": "object must be an object."})
            item = self._message(event_type, body, obj, group_id, now)
            if not item.sender.handles:  # another community's bot, or our answer in a group chat
                return HookOutcome(response=fu.text_response("ok"), discarded="ignored")
        else:
            return HookOutcome(response=fu.text_response("ok"), discarded="ignored")
        return HookOutcome(response=fu.text_response("ok"), items=(item,))

    @staticmethod
    def _key(body: Mapping[str, Any], fallback: str) -> str:
        event_id = body.get("event_id")
        if isinstance(event_id, str) and event_id.strip():
            return f"vk:{fu.safe_id(event_id, 100)}"
        return fallback

    def _lead(
        self, body: Mapping[str, Any], obj: Mapping[str, Any], group_id: str | None, now: datetime
    ) -> Captured:
        lead_id = _int_id(obj.get("lead_id"))
        if lead_id is None:
            raise fu.invalid({"object.lead_id": "lead_id is required."})
        answers = obj.get("answers", [])
        if not isinstance(answers, list):
            raise fu.invalid({"object.answers": "answers must be a list."})
        if len(answers) > fu.MAX_FIELDS:
            raise fu.invalid({"fields": f"Too many fields (at most {fu.MAX_FIELDS})."})
        fields: dict[str, str] = {}
        by_key: dict[str, str] = {}
        for a in answers:
            if not isinstance(a, Mapping):
                continue
            key = fu.clean_text(str(a.get("key") or ""), fu.MAX_KEY_CHARS)
            label = fu.clean_text(str(a.get("question") or ""), fu.MAX_KEY_CHARS) or key
            if not label:
                continue
            text = _answer_text(a.get("answer"))
            fields[label if label not in fields else f"{label} ({key})"] = text
            if key and text:
                by_key.setdefault(key.lower(), text)
        name = " ".join(by_key[k] for k in ("first_name", "patronymic_name", "last_name") if by_key.get(k))
        user_id = _int_id(obj.get("user_id"))
        sender = fu.build_sender(
            name or None,
            [by_key.get("phone_number")],
            [by_key.get("email")],
            [f"vk:{user_id}"] if user_id else [],
        )
        if not fu.has_contact(sender) and not user_id:
            raise fu.no_contact()
        grp = _int_id(obj.get("group_id")) or group_id or ""
        ad_id = _int_id(obj.get("ad_id"))
        utm = {"utm_source": "vk"}
        if ad_id:
            utm["utm_medium"] = "cpc"
            utm["utm_content"] = ad_id
        form_name = fu.clean_text(str(obj.get("form_name") or ""), 200) or None
        return Captured(
            idempotency_key=self._key(body, f"vk:lead_forms_new:{grp}:{lead_id}"),
            kind="ad_lead",
            direction="in",
            occurred_at=fu.parse_time(obj.get("date"), now),
            sender=sender,
            summary=f"Lead form (VK): {form_name or 'lead form'}",
            data={
                "fields": fields,
                "utm": dict(utm),
                "lead_id": lead_id,
                "form_id": _int_id(obj.get("form_id")),
                "form_name": form_name,
                "group_id": grp or None,
                "ad_id": ad_id,
                "vk_user_id": user_id,
                "profile_url": f"https://vk.com/id{user_id}" if user_id else None,
            },
            utm=utm,
        )

    def _message(
        self,
        event_type: str,
        body: Mapping[str, Any],
        obj: Mapping[str, Any],
        group_id: str | None,
        now: datetime,
    ) -> Captured:
        inner = obj.get("message")
        msg: Mapping[str, Any] = inner if isinstance(inner, Mapping) else obj
        msg_id = _int_id(msg.get("id"))
        conv_id = _int_id(msg.get("conversation_message_id"))
        peer_id = _int_id(msg.get("peer_id")) or _int_id(msg.get("from_id"))
        ident = f"{peer_id}:{conv_id}" if conv_id else f"id:{msg_id}"
        key = self._key(body, f"vk:{event_type}:{group_id or ''}:{ident}")
        return message_item(event_type, key, msg, group_id, now)

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return outcome.items


ADAPTER = VkAdapter()
