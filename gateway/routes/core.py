"""Tenants, users, settings."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth
from shared.errors import Forbidden, Unauthorized

router = APIRouter(prefix="/api/v1")


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "ООО Ромашка"}]})
    name: str = Field(min_length=1, max_length=200)


class TenantOut(BaseModel):
    tenant_id: str
    api_key: str = Field(description="The key of the tenant's first admin user; shown once.")


class UserIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Анна", "email": "anna@example.ru", "role": "manager"}]},
    )
    name: str = Field(min_length=1, max_length=200)
    email: str | None = None
    role: Literal["admin", "manager", "viewer"]


class UserOut(BaseModel):
    id: str
    user_id: str
    name: str | None
    email: str | None
    role: str
    active: bool = True
    calendar_url: str | None = None
    api_key: str | None = Field(default=None, description="Only in the answer to POST; shown once.")


class SettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_region: str | None = None
    managers_see_all: bool | None = None
    sla_minutes: int | None = None
    own_domains: list[str] | None = None
    timezone: str | None = None


@router.post("/tenants", status_code=201, response_model=TenantOut, tags=["tenants"])
async def create_tenant(
    body: TenantIn, gw: GW, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """Create a tenant (root token only). Answers the first admin's API key, once."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("Send the root token as `Authorization: Bearer <token>`.")
    if not hmac.compare_digest(authorization[7:].strip().encode(), gw.root_token.encode()):
        raise Forbidden("Only the root token may create tenants.")
    out = await gw.identity.create_tenant(body.name)
    return {"tenant_id": out["tenant_id"], "api_key": out["api_key"]}


@router.post("/users", status_code=201, response_model=UserOut, tags=["users"])
async def create_user(body: UserIn, p: Auth, gw: GW) -> dict[str, Any]:
    out = await gw.identity.create_user(p, body.name, body.email, body.role)
    user = await gw.identity.get_user(p, out["user_id"])
    return {**user, "api_key": out["api_key"]}


@router.get("/users", tags=["users"])
async def list_users(p: Auth, gw: GW) -> dict[str, Any]:
    return {"items": await gw.identity.list_users(p), "next_cursor": None}


@router.get("/users/me", response_model=UserOut, tags=["users"])
async def me(p: Auth, gw: GW) -> dict[str, Any]:
    doc = await gw.identity.user_doc(p)
    view = gw.identity.user_view(doc)
    view["calendar_url"] = f"{gw.settings.base_url}/api/v1/calendar.ics?token={doc['calendar_token']}"
    return view


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"])
async def get_user(user_id: str, p: Auth, gw: GW) -> dict[str, Any]:
    return await gw.identity.get_user(p, user_id)


@router.get("/settings", tags=["settings"])
async def get_settings(p: Auth, gw: GW) -> dict[str, Any]:
    p.require("admin")
    return await gw.identity.tenant_settings(p.tenant_id)


@router.patch("/settings", tags=["settings"])
async def patch_settings(body: SettingsPatch, p: Auth, gw: GW) -> dict[str, Any]:
    p.require("admin")
    return await gw.identity.update_settings(p, body.model_dump(exclude_none=True))
