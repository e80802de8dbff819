"""Channels: where touches come from. Served by the connectors service (secrets stay there)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth, Cursor, Limit
from services.connectors.api import ChannelKind
from shared.docsafe import StoredDict

router = APIRouter(prefix="/api/v1", tags=["channels"])


class ChannelIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "form",
                    "name": "Site: callback form",
                    "config": {"honeypot_field": "website"},
                    "secrets": {"hmac_secret": "s3cret"},
                    "intake": "auto",
                }
            ]
        },
    )
    kind: ChannelKind
    name: str = Field(min_length=1, max_length=200)
    config: StoredDict = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, description="Write-only; stored encrypted.")
    intake: Literal["inbox", "auto"] = "inbox"
    owner_id: str | None = None


class ChannelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    config: StoredDict | None = None
    secrets: dict[str, str] | None = None
    intake: Literal["inbox", "auto"] | None = None
    owner_id: str | None = None
    active: bool | None = None


class ChannelOut(BaseModel):
    id: str
    kind: str
    name: str
    webhook_url: str
    intake: str
    owner_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    secrets_set: list[str] = Field(default_factory=list, description="Names of the secrets set.")
    active: bool = True
    health: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None


@router.post("/channels", status_code=201, response_model=ChannelOut)
async def create_channel(body: ChannelIn, p: Auth, gw: GW) -> Any:
    p.require("admin")
    data = body.model_dump()
    await gw.check_refs(p, {"owner_id": data.get("owner_id")})
    return await gw.call("connectors", "create_channel", p, body=data)


@router.get("/channels")
async def list_channels(p: Auth, gw: GW, limit: Limit = 50, cursor: Cursor = None) -> Any:
    await gw.settle_hook_health()
    return await gw.call("connectors", "list_channels", p, limit=limit, cursor=cursor)


@router.get("/channels/{channel_id}", response_model=ChannelOut)
async def get_channel(channel_id: str, p: Auth, gw: GW) -> Any:
    await gw.settle_hook_health()
    return await gw.call("connectors", "get_channel", p, channel_id=channel_id)


@router.patch("/channels/{channel_id}", response_model=ChannelOut)
async def patch_channel(channel_id: str, body: ChannelPatch, p: Auth, gw: GW) -> Any:
    p.require("admin")
    changes = body.model_dump(exclude_unset=True)
    await gw.check_refs(p, {"owner_id": changes.get("owner_id")})
    return await gw.call("connectors", "update_channel", p, channel_id=channel_id, changes=changes)


class RejectedHook(BaseModel):
    id: str
    at: str | None = None
    status: int | None = Field(default=None, description="The status the hook was answered with.")
    reason: str | None = None
    method: str | None = None
    subpath: str = ""
    body_excerpt: str = Field(default="", description="The first 2000 bytes of the body, as text.")


class RejectedHookPage(BaseModel):
    items: list[RejectedHook]
    next_cursor: str | None = None


@router.get("/channels/{channel_id}/rejected-hooks", response_model=RejectedHookPage)
async def list_rejected_hooks(
    channel_id: str, p: Auth, gw: GW, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """The channel's recent rejected hooks (admin; kept 30 days), newest first, to debug a
    provider's setup. Headers and query strings are not shown: they may carry the channel's token."""
    p.require("admin")
    return await gw.call(
        "connectors", "list_rejected_hooks", p, channel_id=channel_id, limit=limit, cursor=cursor
    )
