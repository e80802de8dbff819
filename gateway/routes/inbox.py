"""The inbox ("Unsorted"): captured items whose sender matched no contact, on `intake: inbox`
channels. Served by the contacts service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.deps import GW, Auth, Cursor, Limit
from services.contacts import api
from services.contacts.api import AcceptIn, InboxItemOut, InboxPage, InboxStatus, LinkIn

router = APIRouter(prefix="/api/v1", tags=["inbox"])


@router.get("/inbox", response_model=InboxPage)
async def list_inbox(
    p: Auth,
    gw: GW,
    status: InboxStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Newest first."""
    return await gw.ask(api.ListInbox(status=status, limit=limit, cursor=cursor), p)


@router.get("/inbox/{item_id}", response_model=InboxItemOut)
async def get_inbox_item(item_id: str, p: Auth, gw: GW) -> Any:
    return await gw.ask(api.GetInboxItem(item_id=item_id), p)


@router.post("/inbox/{item_id}/accept", response_model=InboxItemOut)
async def accept(item_id: str, p: Auth, gw: GW, body: AcceptIn | None = None) -> Any:
    """Creates the contact from the sender (or uses the one that matches by now) with the
    interaction on its timeline; a deal follows in the pipeline's first stage when a pipeline is
    given or the tenant has a default one. Other pending items of the same sender are linked too."""
    p.require("admin", "manager")
    args = body or AcceptIn()
    return await gw.ask(
        api.AcceptInboxItem(item_id=item_id, pipeline_id=args.pipeline_id, owner_id=args.owner_id), p
    )


@router.post("/inbox/{item_id}/link", response_model=InboxItemOut)
async def link(item_id: str, body: LinkIn, p: Auth, gw: GW) -> Any:
    """Attach the item to an existing contact (which learns the sender's phones and emails)."""
    p.require("admin", "manager")
    return await gw.ask(api.LinkInboxItem(item_id=item_id, contact_id=body.contact_id), p)


@router.post("/inbox/{item_id}/reject", response_model=InboxItemOut)
async def reject(item_id: str, p: Auth, gw: GW) -> Any:
    """Spam: kept for audit, never on a card."""
    p.require("admin", "manager")
    return await gw.ask(api.RejectInboxItem(item_id=item_id), p)
