"""The generic ``form`` channel: any site form posting urlencoded, multipart or JSON.

Security (API.md): ``secrets.token``, when set, must match ``X-CRM-Token`` or ``?token=``;
``secrets.hmac_secret``, when set, requires
``X-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.

Fields are matched case-insensitively (see :mod:`._form_util` for the value rules): name from
``name``/``fio``/``full_name``/``your-name`` or ``first_name`` + ``last_name``; phone from
``phone``/``tel``/``telephone``/``mobile``/``your-phone``; email from
``email``/``mail``/``your-email``; ``config.field_map`` (``{"Телефон": "phone"}``) maps other
names onto those.

The captured interaction's ``data``: ``fields`` (every submitted field, flat, strings), ``utm``
(only the UTM keys found), ``page_url`` (or ``None``), ``form_name`` and ``submission_id``.

Idempotency key ``form:<channel id>:<submission id>``: the submission id is a ``submission_id``,
``form_submission_id``, ``id`` or ``tranid`` field, else the ``Idempotency-Key`` header (only when
the body is not HMAC-signed: a signed hook is deduped on the signed bytes alone), else
``sha256:<hex of the raw body>`` (a byte-identical re-post is the same submission).

A filled ``config.honeypot_field`` answers the same 200 as a real submission (the trap is not
revealed) with ``discarded="spam"`` and no items; the outcome stays durable so the consumer
counts it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import _form_util as fu
from .base import Captured, ChannelView, HookOutcome, RawRequest, require_hmac_header

SUBMITTED_AT_KEYS = ("submitted_at", "submittedat", "created_at", "date_submitted")


class FormAdapter:
    """Adapter for ``kind = "form"``."""

    kind = "form"

    def handle(self, channel: ChannelView, request: RawRequest, now: datetime) -> HookOutcome:
        fu.require_token(channel, request)
        hmac_secret = channel.secrets.get("hmac_secret")
        if hmac_secret:
            require_hmac_header(request, hmac_secret)
        fields = fu.parse_form_fields(request, allow_json=True)
        # A signed body is deduped on what the signature covers, never on an unsigned header: a
        # replay of the same signed bytes under a new Idempotency-Key is the same submission.
        return self.outcome_from_fields(channel, request, fields, now, header_key=not hmac_secret)

    def outcome_from_fields(
        self,
        channel: ChannelView,
        request: RawRequest,
        fields: dict[str, str],
        now: datetime,
        *,
        key_prefix: str = "form",
        submission_id: str | None = None,
        occurred_at: datetime | None = None,
        form_name: str | None = None,
        extra_phones: tuple[str, ...] = (),
        extra_emails: tuple[str, ...] = (),
        header_key: bool = True,
    ) -> HookOutcome:
        """Shared by the adapters whose payload boils down to flat fields (tilda, yandex_forms)."""
        config = channel.config or {}
        field_map = config.get("field_map")
        idx = fu.FieldIndex(fields, field_map if isinstance(field_map, dict) else None)

        honeypot = config.get("honeypot_field")
        if isinstance(honeypot, str) and honeypot:
            trap = next((v for k, v in fields.items() if k.lower() == honeypot.lower()), "")
            if trap.strip():
                return HookOutcome(response=fu.json_response(), discarded="spam")

        sender = fu.sender_from_fields(idx)
        if extra_phones or extra_emails:
            sender = fu.build_sender(
                sender.name, [*extra_phones, *sender.phones], [*extra_emails, *sender.emails]
            )
        if not fu.has_contact(sender):
            raise fu.no_contact()

        page_url = idx.get_exact(*fu.PAGE_URL_KEYS) or idx.get("page_url")
        utm = fu.collect_utm(idx, page_url, request.header("referer"))
        sub_id = (
            submission_id
            or idx.get_exact(*fu.SUBMISSION_ID_KEYS)
            or (fu.clean_text(request.header("idempotency-key") or "", 200) if header_key else "")
            or "sha256:" + fu.body_digest(request.body)
        )
        name = form_name or idx.get_exact(*fu.FORM_NAME_KEYS) or idx.get_exact("form.name")
        when = occurred_at or fu.parse_time(idx.get_exact(*SUBMITTED_AT_KEYS), now)
        data: dict[str, Any] = {
            "fields": dict(fields),
            "utm": dict(utm),
            "page_url": fu.clean_text(page_url, 2000) if page_url else None,
            "form_name": name,
            "submission_id": fu.safe_id(sub_id),
        }
        item = Captured(
            idempotency_key=f"{key_prefix}:{channel.id}:{fu.safe_id(sub_id)}",
            kind="form",
            direction="in",
            occurred_at=when,
            sender=sender,
            summary=f"Form submission: {fu.clean_text(name, 200) if name else 'website form'}",
            data=data,
            utm=dict(utm),
        )
        return HookOutcome(response=fu.json_response(), items=(item,))

    async def enrich(
        self, channel: ChannelView, outcome: HookOutcome, http: Any, now: datetime
    ) -> tuple[Captured, ...]:
        """Forms carry everything in the request: nothing to fetch."""
        return outcome.items


ADAPTER = FormAdapter()
