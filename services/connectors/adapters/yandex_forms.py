"""Yandex Forms (forms.yandex.ru) "HTTP request" / "JSON-RPC" integrations.

Yandex Forms lets the form owner choose the body, so this adapter is pragmatic. It accepts a JSON
object that is either

* flat (or nested) answers the owner put in the body (``{"name": "{{name}}", "phone": ...}``),
  mapped exactly like the generic ``form``;
* a JSON-RPC envelope (``{"jsonrpc": "2.0", "method", "params": {...}}``): ``params`` are the
  answers;
* Yandex's full answer object ``{"answer": {"id", "created", "data": ...}}`` where ``data`` is a
  mapping ``{question slug: {"value", "question": {"label", "answer_type": {"slug"}}}}`` or a list
  of such entries. Each answer is kept in ``data.fields`` under its question label (else slug);
  ``answer_phone`` / ``answer_*email`` answer types give the phone and email.

Security: ``secrets.token``, when set, must match ``X-CRM-Token`` or ``?token=`` (the owner adds the
header in the integration settings). Idempotency key ``yandex_forms:<channel id>:<answer id>`` (an
``answer.id``/``id``/``submission_id`` field), else the body hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from . import _form_util as fu
from .base import Captured, ChannelView, HookOutcome, RawRequest
from .form import FormAdapter


def _label(question: Mapping[str, Any]) -> str:
    label = question.get("label")
    if isinstance(label, Mapping):
        for lang in ("ru", "en"):
            if isinstance(label.get(lang), str) and label[lang].strip():
                return fu.clean_text(label[lang], fu.MAX_KEY_CHARS)
        label = next((v for v in label.values() if isinstance(v, str) and v.strip()), "")
    return fu.clean_text(label, fu.MAX_KEY_CHARS) if isinstance(label, str) else ""


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        parts = []
        for v in value:
            if isinstance(v, Mapping):
                parts.append(fu.scalar_text(v.get("text") or v.get("label") or v.get("key")))
            else:
                parts.append(fu.scalar_text(v))
        return ", ".join(p for p in parts if p)
    if isinstance(value, Mapping):
        flat = fu.flatten(value)
        return ", ".join(v for v in flat.values() if v)
    return fu.scalar_text(value)


def _answer_entries(data: Any) -> list[tuple[str, Mapping[str, Any]]]:
    if isinstance(data, Mapping):
        return [(str(k), v) for k, v in data.items() if isinstance(v, Mapping)]
    if isinstance(data, list):
        out: list[tuple[str, Mapping[str, Any]]] = []
        for v in data:
            if isinstance(v, Mapping):
                q = fu.obj(v.get("question"))
                out.append((str(v.get("key") or q.get("slug") or q.get("id") or ""), v))
        return out
    return []


class YandexFormsAdapter:
    """Adapter for ``kind = "yandex_forms"``."""

    kind = "yandex_forms"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        fu.require_token(channel, request)
        body = fu.require_json(request)
        if isinstance(body.get("params"), Mapping) and "jsonrpc" in body:
            body = dict(body["params"])

        answer = body.get("answer")
        phones: list[str] = []
        emails: list[str] = []
        submission_id: str | None = None
        occurred = now
        if isinstance(answer, Mapping) and "data" in answer:
            entries = _answer_entries(answer.get("data"))
            if len(entries) > fu.MAX_FIELDS:
                raise fu.invalid({"fields": f"Too many fields (at most {fu.MAX_FIELDS})."})
            fields: dict[str, str] = {}
            for slug, entry in entries:
                q = fu.obj(entry.get("question"))
                name = _label(q) or fu.clean_text(slug, fu.MAX_KEY_CHARS)
                if not name:
                    continue
                text = _value_text(entry.get("value"))
                fields[name if name not in fields else f"{name} ({slug})"] = text
                at = fu.obj(q.get("answer_type"))
                type_slug = str(at.get("slug") or "")
                if type_slug == "answer_phone":
                    phones.append(text)
                elif type_slug.endswith("email"):
                    emails.append(text)
            # What the owner put next to the answer (UTM tags, page URL...) is kept too.
            extra = fu.flatten({k: v for k, v in body.items() if k != "answer"})
            for key, value in extra.items():
                if key not in fields and len(fields) < fu.MAX_FIELDS:
                    fields[key] = value
            if answer.get("id") is not None:
                submission_id = fu.safe_id(answer["id"])
            occurred = fu.parse_time(answer.get("created"), now)
        else:
            fields = fu.flatten(body)

        outcome = FormAdapter().outcome_from_fields(
            channel,
            request,
            fields,
            now,
            key_prefix="yandex_forms",
            submission_id=submission_id,
            occurred_at=occurred if occurred is not now else None,
            extra_phones=tuple(phones),
            extra_emails=tuple(emails),
        )
        items = tuple(_named(item) for item in outcome.items)
        return HookOutcome(response=outcome.response, items=items, discarded=outcome.discarded)

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        return outcome.items


def _named(item: Captured) -> Captured:
    if item.summary == "Form submission: website form":
        return replace(item, summary="Form submission: Yandex Forms")
    return item


ADAPTER = YandexFormsAdapter()
