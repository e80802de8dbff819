"""Typeform webhooks (``event_type: form_response``).

Signature (Typeform docs, "Secure your webhooks"): ``Typeform-Signature: sha256=<base64 of the
HMAC-SHA256 of the raw body keyed with the webhook secret>``. When ``secrets.secret`` is set the
header is required; without a secret the channel accepts unsigned deliveries.

Each answer carries its value under the key named by its ``type`` (``text``, ``email``,
``phone_number``, ``number``, ``boolean``, ``date``, ``url``, ``file_url``, ``choice.label``,
``choices.labels``...). ``data.fields`` maps the field's ``ref`` (else its id) to the value as text;
hidden fields are kept as ``hidden.<name>`` and supply the UTM tags. The contact: answers of type
``email`` / ``phone_number``, the name from fields whose ref or title looks like a name, or hidden
fields of those names. Idempotency key ``typeform:<event_id>`` (else
``typeform:<form_id>:<token>``). Other event types (e.g. ``form_response_partial``) are answered
200 with ``discarded="ignored"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import _form_util as fu
from .base import Captured, ChannelView, HookOutcome, RawRequest, bad_signature, constant_time_equal

# A short-text question titled like "What is your first name?" / "Как вас зовут?" holds the name.
_NAME_TITLE = re.compile(r"\b(name|имя|фио|зовут)\b", re.IGNORECASE)
_NOT_NAME = re.compile(r"company|business|организац|компани|user ?name|nickname", re.IGNORECASE)


def verify_typeform_signature(request: RawRequest, secret: str) -> None:
    got = (request.header("typeform-signature") or "").strip()
    if not got.startswith("sha256="):
        raise bad_signature("Typeform-Signature header missing or not of the form sha256=<base64>.")
    digest = hmac.new(secret.encode(), request.body, hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    if not constant_time_equal(got[7:], expected):
        raise bad_signature()


def _answer_text(answer: Mapping[str, Any]) -> str:
    kind = answer.get("type")
    value = answer.get(kind) if isinstance(kind, str) else None
    if kind == "choice" and isinstance(value, Mapping):
        return fu.scalar_text(value.get("label") or value.get("other"))
    if kind == "choices" and isinstance(value, Mapping):
        labels = value.get("labels") if isinstance(value.get("labels"), list) else []
        parts = [fu.scalar_text(x) for x in labels or []]
        if value.get("other"):
            parts.append(fu.scalar_text(value.get("other")))
        return ", ".join(p for p in parts if p)
    if isinstance(value, Mapping | list):
        flat = fu.flatten({"v": value})
        return ", ".join(f"{k[2:]}={v}" if k != "v" else v for k, v in flat.items() if v)
    return fu.scalar_text(value)


class TypeformAdapter:
    """Adapter for ``kind = "typeform"``."""

    kind = "typeform"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        secret = channel.secrets.get("secret")
        if secret:
            verify_typeform_signature(request, secret)
        body = fu.require_json(request)
        event_type = body.get("event_type")
        if event_type != "form_response":
            return HookOutcome(response=fu.json_response(), discarded="ignored")
        resp = body.get("form_response")
        if not isinstance(resp, Mapping):
            raise fu.invalid({"form_response": "form_response must be an object."})
        answers = resp.get("answers", [])
        if not isinstance(answers, list):
            raise fu.invalid({"form_response.answers": "answers must be a list."})
        if len(answers) > fu.MAX_FIELDS:
            raise fu.invalid({"fields": f"Too many fields (at most {fu.MAX_FIELDS})."})
        definition = fu.obj(resp.get("definition"))
        titles: dict[str, str] = {}
        for f in fu.lst(definition.get("fields")):
            if isinstance(f, Mapping) and f.get("id"):
                titles[str(f["id"])] = fu.scalar_text(f.get("title"))

        fields: dict[str, str] = {}
        name_parts: list[str] = []
        phones: list[str] = []
        emails: list[str] = []
        for answer in answers:
            if not isinstance(answer, Mapping):
                continue
            field = fu.obj(answer.get("field"))
            key = fu.clean_text(str(field.get("ref") or field.get("id") or ""), fu.MAX_KEY_CHARS)
            if not key:
                continue
            text = _answer_text(answer)
            fields[key] = text
            kind = answer.get("type")
            if kind == "email" or field.get("type") == "email":
                emails.append(text)
            elif kind == "phone_number" or field.get("type") == "phone_number":
                phones.append(text)
            title = titles.get(str(field.get("id") or ""), "")
            if kind == "text" and text and _NAME_TITLE.search(title) and not _NOT_NAME.search(title):
                name_parts.append(text)

        hidden = fu.obj(resp.get("hidden"))
        for k, v in hidden.items():
            fields[f"hidden.{fu.clean_text(str(k), fu.MAX_KEY_CHARS)}"] = fu.scalar_text(v)
        if len(fields) > fu.MAX_FIELDS:
            raise fu.invalid({"fields": f"Too many fields (at most {fu.MAX_FIELDS})."})

        idx = fu.FieldIndex(fields, channel.config.get("field_map") or None)
        base_sender = fu.sender_from_fields(idx)
        sender = fu.build_sender(
            base_sender.name or " ".join(name_parts[:2]) or None,
            [*phones, *base_sender.phones],
            [*emails, *base_sender.emails],
        )
        if not fu.has_contact(sender):
            raise fu.no_contact()

        utm = fu.utm_from_fields(idx)
        form_id = fu.safe_id(resp.get("form_id") or definition.get("id") or "")
        event_id = body.get("event_id")
        if event_id:
            key = f"typeform:{fu.safe_id(event_id)}"
        elif resp.get("token"):
            key = f"typeform:{form_id}:{fu.safe_id(resp['token'])}"
        else:
            key = f"typeform:{channel.id}:sha256:{fu.body_digest(request.body)}"
        title = fu.scalar_text(definition.get("title")) or form_id or "Typeform"
        data: dict[str, Any] = {
            "fields": fields,
            "utm": dict(utm),
            "page_url": None,
            "form_name": title,
            "form_id": form_id or None,
            "submission_id": fu.safe_id(resp.get("token") or event_id or ""),
        }
        item = Captured(
            idempotency_key=key,
            kind="form",
            direction="in",
            occurred_at=fu.parse_time(resp.get("submitted_at"), now),
            sender=sender,
            summary=f"Form submission: {fu.clean_text(title, 200)}",
            data=data,
            utm=dict(utm),
        )
        return HookOutcome(response=fu.json_response(), items=(item,))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return outcome.items


ADAPTER = TypeformAdapter()
