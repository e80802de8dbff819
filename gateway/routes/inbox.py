"""The inbox ("Unsorted"): captured items whose sender matched no contact, on `intake: inbox`
channels. Served by the contacts service."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth, Cursor, Limit

router = APIRouter(prefix="/api/v1", tags=["inbox"])


class Sender(BaseModel):
    name: str | None = None
    phones: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)


class Interaction(BaseModel):
    id: str
    kind: str
    direction: str
    occurred_at: str
    channel_id: str | None = None
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class InboxItem(BaseModel):
    id: str
    status: Literal["pending", "accepted", "rejected", "linked"]
    channel_id: str | None = None
    channel_kind: str | None = None
    received_at: str | None = None
    sender: Sender
    interaction: Interaction
    contact_id: str | None = None
    resolved_at: str | None = None


class InboxPage(BaseModel):
    items: list[InboxItem]
    next_cursor: str | None = None


class AcceptIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"pipeline_id": "01hx..."}, {}]}
    )
    pipeline_id: str | None = None
    owner_id: str | None = None


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"contact_id": "01hx..."}]})
    contact_id: str = Field(min_length=1, max_length=64)


@router.get("/inbox", response_model=InboxPage)
async def list_inbox(
    p: Auth,
    gw: GW,
    status: Literal["pending", "accepted", "rejected", "linked"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Newest first."""
    return await gw.call("contacts", "list_inbox", p, status=status, limit=limit, cursor=cursor)


@router.get("/inbox/{item_id}", response_model=InboxItem)
async def get_inbox_item(item_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("contacts", "get_inbox_item", p, item_id=item_id)


@router.post("/inbox/{item_id}/accept", response_model=InboxItem)
async def accept(item_id: str, p: Auth, gw: GW, body: AcceptIn | None = None) -> Any:
    """Creates the contact from the sender (or uses the one that matches by now) with the
    interaction on its timeline; a deal follows in the pipeline's first stage when a pipeline is
    given or the tenant has a default one. Other pending items of the same sender are linked too."""
    p.require("admin", "manager")
    args = (body or AcceptIn()).model_dump()
    return await gw.call("contacts", "accept_inbox_item", p, item_id=item_id, **args)


@router.post("/inbox/{item_id}/link", response_model=InboxItem)
async def link(item_id: str, body: LinkIn, p: Auth, gw: GW) -> Any:
    """Attach the item to an existing contact (which learns the sender's phones and emails)."""
    p.require("admin", "manager")
    return await gw.call("contacts", "link_inbox_item", p, item_id=item_id, contact_id=body.contact_id)


@router.post("/inbox/{item_id}/reject", response_model=InboxItem)
async def reject(item_id: str, p: Auth, gw: GW) -> Any:
    """Spam: kept for audit, never on a card."""
    p.require("admin", "manager")
    return await gw.call("contacts", "reject_inbox_item", p, item_id=item_id)
