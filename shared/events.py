"""The event envelope and the versioned payload schemas every service shares.

Routing key: ``<aggregate>.<verb>.v<N>`` on one topic exchange. An optional field added to a
payload (or to the envelope) keeps its version, and consumers of that version ignore what they do
not know; a breaking change (a field removed, renamed, retyped or made required, a meaning
changed) is a new version published beside the old one, ``*.v2`` next to ``*.v1``, until no
consumer binds ``*.v1`` any more (deploy/README.md, "Evolving events").
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.clock import new_id

PUBLIC_PREFIXES = ("contact.", "deal.", "task.", "inbox.", "message.")
PUBLIC_TYPES = frozenset({"interaction.recorded"})
"""The event types clients see (API.md): on the live stream and in outbound webhooks. Everything
else (``hook.received``, ``mail.received``, ``interaction.captured``, ``rule.*``, settings, users,
pipelines, channels...) is a hand-off between services on the internal exchange."""


def is_public(event_type: str) -> bool:
    return event_type in PUBLIC_TYPES or event_type.startswith(PUBLIC_PREFIXES)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
    """Read tolerantly: a field a newer release adds to the envelope is ignored by this one (it
    would otherwise dead-letter every event of the newer producers during a rolling upgrade);
    payloads keep such fields (:class:`Payload`). A breaking change is a new version."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    event_type: str
    version: int = 1
    occurred_at: datetime
    tenant_id: str
    producer: str
    correlation_id: str
    causation_id: str | None = None
    idempotency_key: str | None = None
    payload: dict[str, Any]

    @property
    def routing_key(self) -> str:
        return f"{self.event_type}.v{self.version}"

    def parsed(self) -> Any:
        """The payload as its registered model (validated), or the dict when none is registered."""
        model = PAYLOADS.get((self.event_type, self.version))
        return model.model_validate(self.payload) if model else self.payload


def make_event(
    event_type: str,
    *,
    tenant_id: str,
    producer: str,
    payload: BaseModel | dict[str, Any],
    version: int = 1,
    idempotency_key: str | None = None,
    caused_by: Envelope | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> Envelope:
    """A new envelope. With an ``idempotency_key`` the ``event_id`` is derived from it, so the same
    business fact published twice carries the same id and consumers drop the repeat."""
    model = PAYLOADS.get((event_type, version))
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else dict(payload)
    if model is not None:
        data = model.model_validate(data).model_dump(mode="json")
    if idempotency_key:
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{event_type}/{idempotency_key}"))
    else:
        event_id = new_id()
    return Envelope(
        event_id=event_id,
        event_type=event_type,
        version=version,
        occurred_at=occurred_at or datetime.now(UTC),
        tenant_id=tenant_id,
        producer=producer,
        correlation_id=correlation_id or (caused_by.correlation_id if caused_by else event_id),
        causation_id=caused_by.event_id if caused_by else None,
        idempotency_key=idempotency_key,
        payload=data,
    )


# ---- payloads -------------------------------------------------------------------------------

Kind = Literal["call", "email", "form", "ad_lead", "message", "note", "meeting", "task", "deal"]


class Payload(BaseModel):
    """Payloads tolerate fields added later (forward compatible) but are immutable."""

    model_config = ConfigDict(frozen=True, extra="allow")


class SenderData(Payload):
    name: str | None = None
    phones: list[str] = Field(default_factory=list)
    """E.164 where the number parsed."""
    raw_phones: list[str] = Field(default_factory=list)
    """What could not be parsed as a phone, kept as text."""
    emails: list[str] = Field(default_factory=list)
    handles: list[str] = Field(default_factory=list)
    """Messenger identities ``<network>:<user id>`` (``telegram:123``, ``vk:456``)."""


class InteractionCaptured(Payload):
    """connectors → contacts: one touch from a channel, normalised."""

    channel_id: str
    channel_kind: str
    intake: Literal["inbox", "auto"]
    channel_owner_id: str | None = None
    kind: Kind
    direction: Literal["in", "out"]
    occurred_at: datetime
    sender: SenderData
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)
    utm: dict[str, str] = Field(default_factory=dict)
    subject_key: str | None = None
    contact_id: str | None = None
    """Set on an answer sent from a conversation: the card it belongs on (while that contact is
    active; else it is filed by the sender's identity like any touch)."""


class InteractionRecorded(Payload):
    """contacts: an interaction is on a contact's timeline (new, or updated: a call that ended)."""

    interaction_id: str
    contact_id: str
    owner_id: str | None = None
    channel_id: str | None = None
    channel_kind: str | None = None
    channel_owner_id: str | None = None
    kind: Kind
    direction: Literal["in", "out"]
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
    is_new_contact: bool = False
    first_of_subject: bool = True


class ContactCreated(Payload):
    contact_id: str
    owner_id: str | None = None
    source: dict[str, Any] | None = None
    """First touch: ``channel_id``, ``kind`` (the channel kind, or ``manual``), ``utm_*``."""
    channel_owner_id: str | None = None
    interaction_kind: str | None = None
    """The kind of the interaction that created the contact (``form``, ``ad_lead``, ``call``...)."""


class ContactMerged(Payload):
    contact_id: str
    merged_id: str


class ContactErased(Payload):
    contact_id: str
    identity_keys: list[str] = Field(default_factory=list)
    """:func:`shared.normalize.identity_digest` of every phone, email and handle the contact had:
    what other services hold under those keys is forgotten too."""


class ContactUpdated(Payload):
    """``fields`` names the changed fields (``import`` for a CSV row), never their values; a rule's
    change carries ``caused_by_rule``, ``rule_chain``, ``caused_by_subject``."""

    contact_id: str
    owner_id: str | None = None
    fields: list[str] = Field(default_factory=list)


class ContactDeleted(Payload):
    contact_id: str
    owner_id: str | None = None


class CompanyCreated(Payload):
    company_id: str
    owner_id: str | None = None


class CompanyUpdated(Payload):
    company_id: str
    fields: list[str] = Field(default_factory=list)


class InboxItemOpened(Payload):
    item_id: str
    channel_id: str
    kind: Kind


class InboxCallMissed(Payload):
    """contacts → tasks: a missed inbound call from an unknown number waits in the inbox."""

    item_id: str
    channel_id: str | None = None
    channel_kind: str | None = None
    channel_owner_id: str | None = None
    kind: Literal["call"] = "call"
    direction: Literal["in"] = "in"
    occurred_at: str
    """ISO 8601 with offset."""
    data: dict[str, Any] = Field(default_factory=lambda: {"status": "missed"})


class TenantSettingsChanged(Payload):
    settings: dict[str, Any]


class UserChanged(Payload):
    user_id: str
    name: str | None = None
    role: str
    active: bool = True


PAYLOADS: dict[tuple[str, int], type[BaseModel]] = {
    ("interaction.captured", 1): InteractionCaptured,
    ("interaction.recorded", 1): InteractionRecorded,
    ("contact.created", 1): ContactCreated,
    ("contact.updated", 1): ContactUpdated,
    ("contact.deleted", 1): ContactDeleted,
    ("company.created", 1): CompanyCreated,
    ("company.updated", 1): CompanyUpdated,
    ("inbox.call_missed", 1): InboxCallMissed,
    ("contact.merged", 1): ContactMerged,
    ("contact.erased", 1): ContactErased,
    ("inbox.item_opened", 1): InboxItemOpened,
    ("tenant.settings_changed", 1): TenantSettingsChanged,
    ("user.changed", 1): UserChanged,
}


# ---- tasks ----------------------------------------------------------------------------------


class TaskEvent(Payload):
    """tasks: ``task.created|updated|completed|canceled|reassigned|reminder_due|overdue``.

    Extra fields by type: ``created`` ``remind_before_s`` (+ ``caused_by_rule``, ``rule_chain``,
    ``caused_by_subject`` when a rule made it); ``updated`` ``changes`` (field names);
    ``reassigned`` ``previous_assignee_id``; ``completed`` ``result``, ``completed_at``;
    ``canceled`` ``canceled_at``; ``reminder_due`` ``remind_at``, ``remind_before_s``."""

    task_id: str
    assignee_id: str | None = None
    contact_id: str | None = None
    deal_id: str | None = None
    due_at: str
    """ISO 8601 with offset."""
    kind: str
    title: str
    status: Literal["open", "done", "canceled"]


class RuleCommand(Payload):
    """tasks → other services: an automation rule asks for an action. Whoever carries it out puts
    ``caused_by_rule``, ``rule_chain`` and ``caused_by_subject`` into the payload of the events it
    emits (loop protection), and treats ``action_key`` as the idempotency key."""

    caused_by_rule: str
    rule_chain: list[str] = Field(default_factory=list)
    caused_by_subject: str | None = None
    action_key: str


class RuleAssignOwnerRequested(RuleCommand):
    """contacts (and deals when ``deal_id``): give the subject to ``user_id``."""

    user_id: str
    contact_id: str | None = None
    deal_id: str | None = None


class RuleMoveDealRequested(RuleCommand):
    """deals: move ``deal_id`` to ``stage_id``."""

    deal_id: str
    stage_id: str


class RuleWebhookRequested(RuleCommand):
    """gateway webhook delivery: POST ``event`` (``event_id``, ``event_type``, ``payload``) to ``url``."""

    url: str
    event: dict[str, Any]
    secret: str | None = None
    """The rule's signing secret, sealed with the installation's key (``sealed:<token>``); never
    plain text on the bus. None for a rule stored before rules had secrets."""


# ---- deals ----------------------------------------------------------------------------------
# Payloads of the deals service's events (built by services/deals/domain.py). Money is a decimal
# string, timestamps are ISO 8601 strings; no deal titles or other personal data.


class DealEvent(Payload):
    """Common fields of ``deal.created``/``updated``/``won``/``lost`` (a snapshot of the deal)."""

    deal_id: str
    pipeline_id: str | None = None
    stage_id: str | None = None
    status: Literal["open", "won", "lost"] | None = None
    amount: str | None = None
    currency: str | None = None
    probability: int | None = None
    owner_id: str | None = None
    contact_id: str | None = None
    company_id: str | None = None
    expected_close: str | None = None
    """``YYYY-MM-DD`` (the forecast groups open deals by it)."""
    occurred_at: str | None = None
    """When it happened (historical for imports, which carry ``imported: true``)."""


class DealCreated(DealEvent):
    source: dict[str, Any] | None = None
    """The contact's first touch (``channel_id``, ``kind``, ``utm_*``), when known."""


class DealUpdated(DealEvent):
    """``changed`` names the changed fields (``probability``, ``contact_id``, ``source``...), no
    values of personal data; a merge adds ``previous_contact_id``, a late attribution ``source``."""

    changed: list[str] = Field(default_factory=list)


class DealClosed(DealEvent):
    """``deal.won`` / ``deal.lost``."""

    source: dict[str, Any] | None = None
    cycle_time_s: int | None = None
    won_at: str | None = None
    lost_at: str | None = None
    lost_reason: str | None = None


class DealStageChanged(Payload):
    deal_id: str
    pipeline_id: str | None = None
    from_stage_id: str | None = None
    to_stage_id: str | None = None
    from_kind: Literal["open", "won", "lost"] | None = None
    to_kind: Literal["open", "won", "lost"] | None = None
    time_in_stage_s: int | None = None
    """Seconds the deal spent in ``from_stage_id`` this visit."""
    amount: str | None = None
    currency: str | None = None
    probability: int | None = None
    owner_id: str | None = None
    contact_id: str | None = None
    occurred_at: str | None = None
    reopened: bool = False


class DealReopened(Payload):
    deal_id: str
    pipeline_id: str | None = None
    from_stage_id: str | None = None
    to_stage_id: str | None = None
    previous_status: Literal["won", "lost"] | None = None
    amount: str | None = None
    currency: str | None = None
    owner_id: str | None = None
    contact_id: str | None = None
    occurred_at: str | None = None


class DealErased(Payload):
    deal_id: str
    contact_id: str | None = None
    occurred_at: str | None = None


class PipelineChanged(Payload):
    """``pipeline.created`` / ``pipeline.updated``: the whole stage list (open in order, won, lost)."""

    pipeline_id: str
    name: str | None = None
    stages: list[dict[str, Any]] = Field(default_factory=list)
    """``[{"id", "name", "probability", "kind"}]``."""
    default: bool = False
    deleted_stage_ids: list[str] = Field(default_factory=list)
    move_plan: dict[str, str] = Field(default_factory=dict)
    occurred_at: str | None = None


class PipelineDeleted(Payload):
    """``pipeline.deleted``: an empty pipeline was removed (``pipeline.created`` again when the
    delete had to be undone because a deal landed in it meanwhile)."""

    pipeline_id: str
    name: str | None = None
    occurred_at: str | None = None


# ---- contacts ----


class InboxItemAccepted(Payload):
    """contacts → deals: an inbox item became a contact; deals opens a deal when a pipeline applies
    (``pipeline_id``, else the tenant's default pipeline). Deal idempotency key ``inbox:<item_id>``."""

    item_id: str
    contact_id: str
    pipeline_id: str | None = None
    owner_id: str | None = None
    title: str


class InboxItemLinked(Payload):
    item_id: str
    contact_id: str


class InboxItemRejected(Payload):
    """Spam: kept for audit, never on a card."""

    item_id: str
    channel_id: str | None = None
    kind: str | None = None


PAYLOADS.update(
    {
        **{
            (f"task.{verb}", 1): TaskEvent
            for verb in (
                "created",
                "updated",
                "completed",
                "canceled",
                "reassigned",
                "reminder_due",
                "overdue",
            )
        },
        ("rule.assign_owner_requested", 1): RuleAssignOwnerRequested,
        ("rule.move_deal_requested", 1): RuleMoveDealRequested,
        ("rule.webhook_requested", 1): RuleWebhookRequested,
        ("deal.created", 1): DealCreated,
        ("deal.updated", 1): DealUpdated,
        ("deal.won", 1): DealClosed,
        ("deal.lost", 1): DealClosed,
        ("deal.stage_changed", 1): DealStageChanged,
        ("deal.reopened", 1): DealReopened,
        ("deal.erased", 1): DealErased,
        ("pipeline.created", 1): PipelineChanged,
        ("pipeline.updated", 1): PipelineChanged,
        ("pipeline.deleted", 1): PipelineDeleted,
        ("inbox.item_accepted", 1): InboxItemAccepted,
        ("inbox.item_linked", 1): InboxItemLinked,
        ("inbox.item_rejected", 1): InboxItemRejected,
    }
)


# ---- conversations --------------------------------------------------------------------------


class MessageEvent(Payload):
    """``message.received`` / ``message.sent`` / ``message.status_changed`` (public): ids, the
    status and times, never the text or the thread's address."""

    message_id: str
    conversation_id: str
    contact_id: str | None = None
    channel_id: str
    channel_kind: str
    direction: Literal["in", "out"]
    status: Literal["received", "queued", "sent", "delivered", "read", "failed"]
    assignee_id: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
    occurred_at: str
    """ISO 8601: received, sent, or when the status changed."""
    awaiting_reply_since: str | None = None
    """``message.sent``: since when the customer had waited for this answer (null: nobody was
    waiting, a follow-up); the response-time report measures from it."""


class DeliveryStatusReported(Payload):
    """connectors (a provider's hook) → conversations: a delivery report on a message we sent."""

    channel_id: str
    idempotency_key: str
    provider_message_id: str
    status: Literal["sent", "delivered", "read", "failed"]
    occurred_at: datetime
    error: str | None = None


PAYLOADS.update(
    {
        ("message.received", 1): MessageEvent,
        ("message.sent", 1): MessageEvent,
        ("message.status_changed", 1): MessageEvent,
        ("delivery.status_reported", 1): DeliveryStatusReported,
    }
)


def event_types_of(model: type[BaseModel]) -> list[tuple[str, int]]:
    """The ``(event_type, version)`` pairs whose payload schema is ``model``."""
    return sorted(k for k, v in PAYLOADS.items() if v is model)
