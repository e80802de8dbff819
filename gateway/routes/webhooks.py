"""Outbound webhook subscriptions and their delivery logs (admin: they carry all tenant events)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth, Cursor, Limit
from shared.events import is_public

router = APIRouter(prefix="/api/v1", tags=["webhooks"])


def _public_type(value: str) -> str:
    if value != "*" and not is_public(value):
        raise ValueError(
            "is not a public event type (contact.*, deal.*, task.*, inbox.*, message.*, interaction.recorded)"
        )
    return value


EventType = Annotated[
    str,
    Field(min_length=1, max_length=100, pattern=r"^(\*|[a-z_]+\.[a-z_]+)$"),
    AfterValidator(_public_type),
]


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://erp.example.ru/crm-hook",
                    "events": ["deal.won", "contact.created"],
                    "secret": "whsec_9d8f7a6b5c4d3e2f",
                    "description": "ERP sync",
                }
            ]
        },
    )
    url: AnyHttpUrl = Field(description="Where deliveries are POSTed (http or https).")
    events: list[EventType] = Field(min_length=1, max_length=100, description='Event types; "*" for all.')
    secret: str = Field(
        min_length=8, max_length=200, description="Write-only; signs deliveries (X-CRM-Signature)."
    )
    description: str | None = Field(default=None, max_length=300)


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"events": ["*"]}]})
    url: AnyHttpUrl | None = None
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=100)
    secret: str | None = Field(default=None, min_length=8, max_length=200)
    description: str | None = Field(default=None, max_length=300)


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01jd7w3k9q8m2x4v6b5n7c0a1z",
                    "url": "https://erp.example.ru/crm-hook",
                    "events": ["contact.created", "deal.won"],
                    "active": True,
                    "description": "ERP sync",
                    "created_at": "2026-11-27T10:00:00+00:00",
                    "created_by": "01jd7w3k9q8m2x4v6b5n7c0a00",
                }
            ]
        }
    )
    id: str
    url: str
    events: list[str]
    active: bool
    description: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None


class SubscriptionPage(BaseModel):
    items: list[SubscriptionOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    status: int | None = Field(description="The endpoint's HTTP status; null when it did not answer.")
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5c1e0f3a-8f43-5b8e-9a51-0d9f3c2b1a77",
                    "subscription_id": "01jd7w3k9q8m2x4v6b5n7c0a1z",
                    "event_id": "01jd7x0000000000000000000a",
                    "event_type": "deal.won",
                    "state": "delivered",
                    "attempts": 2,
                    "created_at": "2026-11-27T10:00:00+00:00",
                    "next_attempt_at": None,
                    "delivered_at": "2026-11-27T10:00:31+00:00",
                    "last_status": 200,
                    "last_error": None,
                    "log": [
                        {
                            "attempt": 1,
                            "at": "2026-11-27T10:00:00+00:00",
                            "status": 503,
                            "error": "HTTP 503",
                            "duration_ms": 41,
                        },
                        {
                            "attempt": 2,
                            "at": "2026-11-27T10:00:31+00:00",
                            "status": 200,
                            "error": None,
                            "duration_ms": 35,
                        },
                    ],
                }
            ]
        }
    )
    id: str = Field(description="Also sent as X-CRM-Delivery-Id; the same on every retry.")
    subscription_id: str
    event_id: str
    event_type: str
    state: Literal["pending", "delivered", "failed", "canceled"]
    attempts: int
    created_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    log: list[AttemptOut] = Field(description="The latest attempts (up to 20).")


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


@router.post("/subscriptions", status_code=201, response_model=SubscriptionOut)
async def create_subscription(body: SubscriptionIn, p: Auth, gw: GW) -> dict[str, Any]:
    """Subscribe a URL to event types (admin). Each matching event is POSTed once per
    subscription, as JSON `{"delivery_id", "event_id", "event_type", "version", "occurred_at",
    "tenant_id", "payload"}` with `X-CRM-Signature: sha256=<hex HMAC-SHA256 of the raw body with
    the secret>`, `X-CRM-Delivery-Id` and `X-CRM-Event-Type`. Any non-2xx answer or timeout is
    retried with exponential back-off for up to 24 h, then the delivery is marked failed."""
    p.require("admin")
    return await gw.identity.webhooks.create(
        p.tenant_id, p.user_id, str(body.url), list(body.events), body.secret, body.description
    )


@router.get("/subscriptions", response_model=SubscriptionPage)
async def list_subscriptions(p: Auth, gw: GW, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    """The tenant's active subscriptions, oldest first (admin). Secrets are never returned."""
    p.require("admin")
    return await gw.identity.webhooks.list(p.tenant_id, limit, cursor)


@router.get("/subscriptions/{subscription_id}", response_model=SubscriptionOut)
async def get_subscription(subscription_id: str, p: Auth, gw: GW) -> dict[str, Any]:
    """One subscription (admin)."""
    p.require("admin")
    return await gw.identity.webhooks.get(p.tenant_id, subscription_id)


@router.patch("/subscriptions/{subscription_id}", response_model=SubscriptionOut)
async def patch_subscription(
    subscription_id: str, body: SubscriptionPatch, p: Auth, gw: GW
) -> dict[str, Any]:
    """Change the URL, event types, secret or description (admin). Pending deliveries go to
    the new URL with the new signature."""
    p.require("admin")
    changes = body.model_dump(exclude_none=True)
    if "url" in changes:
        changes["url"] = str(changes["url"])
    return await gw.identity.webhooks.update(p.tenant_id, subscription_id, changes)


@router.delete("/subscriptions/{subscription_id}", status_code=204)
async def delete_subscription(subscription_id: str, p: Auth, gw: GW) -> Response:
    """Stop deliveries; pending ones are canceled. The delivery log stays readable."""
    p.require("admin")
    await gw.identity.webhooks.delete(p.tenant_id, subscription_id)
    return Response(status_code=204)


@router.get("/subscriptions/{subscription_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    subscription_id: str,
    p: Auth,
    gw: GW,
    limit: Limit = 50,
    cursor: Cursor = None,
    state: Annotated[
        Literal["pending", "delivered", "failed", "canceled"] | None, Query(description="Only this state.")
    ] = None,
) -> dict[str, Any]:
    """The subscription's deliveries, newest first, each with its latest attempts."""
    p.require("admin")
    return await gw.identity.webhooks.deliveries(p.tenant_id, subscription_id, limit, cursor, state)
