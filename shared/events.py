"""The event envelope and the versioned payload schemas every service shares.

Routing key: ``<aggregate>.<verb>.v<N>`` on one topic exchange. An optional field added to a
payload keeps its version; a breaking change is a new version published beside the old one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.clock import new_id


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
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


class InboxItemOpened(Payload):
    item_id: str
    channel_id: str
    kind: Kind


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
    ("contact.merged", 1): ContactMerged,
    ("contact.erased", 1): ContactErased,
    ("inbox.item_opened", 1): InboxItemOpened,
    ("tenant.settings_changed", 1): TenantSettingsChanged,
    ("user.changed", 1): UserChanged,
}


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
        ("inbox.item_accepted", 1): InboxItemAccepted,
        ("inbox.item_linked", 1): InboxItemLinked,
        ("inbox.item_rejected", 1): InboxItemRejected,
    }
)
