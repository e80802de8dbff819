"""Contacts and their timelines. Served by the contacts service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth, Cursor, Limit

router = APIRouter(prefix="/api/v1", tags=["contacts"])


class ContactIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Иван Петров", "phones": ["8 (916) 555-12-34"], "emails": ["Ivan@Example.ru"]}
            ]
        },
    )
    name: str | None = Field(default=None, max_length=300)
    phones: list[str] = Field(default_factory=list, max_length=20)
    emails: list[str] = Field(default_factory=list, max_length=20)
    company_id: str | None = None
    owner_id: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)
    custom: dict[str, Any] = Field(default_factory=dict)


class ContactPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=300)
    phones: list[str] | None = Field(default=None, max_length=20)
    emails: list[str] | None = Field(default=None, max_length=20)
    company_id: str | None = None
    owner_id: str | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    custom: dict[str, Any] | None = None


class Source(BaseModel):
    channel_id: str | None = None
    kind: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None


class ContactOut(BaseModel):
    id: str
    name: str | None = None
    phones: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    company_id: str | None = None
    owner_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    custom: dict[str, Any] = Field(default_factory=dict)
    source: Source | None = None
    created_at: str
    updated_at: str
    merged_into: str | None = None


class TimelineItem(BaseModel):
    id: str
    kind: str
    direction: str
    occurred_at: str
    channel_id: str | None = None
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = None


@router.get("/contacts", response_model=Page)
async def list_contacts(
    p: Auth,
    gw: GW,
    phone: str | None = None,
    email: str | None = None,
    q: str | None = None,
    owner_id: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Search: phone in any format (E.164 with the tenant's region), email case-insensitive, `q` a
    prefix of any word of the name, of the email, or digits of the phone."""
    return await gw.call(
        "contacts",
        "list_contacts",
        p,
        filters={"phone": phone, "email": email, "q": q, "owner_id": owner_id},
        limit=limit,
        cursor=cursor,
    )


@router.post("/contacts", status_code=201, response_model=ContactOut)
async def create_contact(body: ContactIn, p: Auth, gw: GW) -> Any:
    return await gw.call("contacts", "create_contact", p, body=body.model_dump(exclude_unset=True))


@router.get("/contacts/{contact_id}", response_model=ContactOut)
async def get_contact(contact_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("contacts", "get_contact", p, contact_id=contact_id)


@router.patch("/contacts/{contact_id}", response_model=ContactOut)
async def patch_contact(contact_id: str, body: ContactPatch, p: Auth, gw: GW) -> Any:
    return await gw.call(
        "contacts", "update_contact", p, contact_id=contact_id, changes=body.model_dump(exclude_unset=True)
    )


@router.delete("/contacts/{contact_id}", status_code=204)
async def delete_contact(contact_id: str, p: Auth, gw: GW) -> None:
    await gw.call("contacts", "delete_contact", p, contact_id=contact_id)


@router.get("/contacts/{contact_id}/timeline", response_model=Page)
async def timeline(contact_id: str, p: Auth, gw: GW, limit: Limit = 50, cursor: Cursor = None) -> Any:
    """Every touch of this contact, newest first."""
    return await gw.call("contacts", "timeline", p, contact_id=contact_id, limit=limit, cursor=cursor)
