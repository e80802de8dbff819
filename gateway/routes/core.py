"""Tenants, users, API keys, settings."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth, Cursor, Limit
from shared.errors import Forbidden, NotFound, Unauthorized

router = APIRouter(prefix="/api/v1")

RoleName = Literal["admin", "manager", "viewer"]


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "ООО Ромашка"}]})
    name: str = Field(min_length=1, max_length=200, pattern=r"\S")


class TenantOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"tenant_id": "01jd7w3k9q8m2x4v6b5n7c0a1z", "api_key": "crm_9f2c…_…"}]
        }
    )
    tenant_id: str
    api_key: str = Field(description="The key of the tenant's first admin user; shown once.")


class UserIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Анна", "email": "anna@example.ru", "role": "manager"}]},
    )
    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    email: str | None = Field(default=None, max_length=320)
    role: RoleName
    password: str | None = Field(
        default=None,
        min_length=10,
        max_length=1024,
        description="Optional console password (at least 10 characters); stored as an argon2 hash.",
    )


class UserPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"role": "viewer", "active": False}]}
    )
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S")
    role: RoleName | None = None
    email: str | None = Field(default=None, max_length=320, description="The sign-in email of the console.")
    active: bool | None = Field(default=None, description="false: the user's keys stop working at once.")


class UserOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01jd7w3k9q8m2x4v6b5n7c0a1z",
                    "user_id": "01jd7w3k9q8m2x4v6b5n7c0a1z",
                    "name": "Анна",
                    "email": "anna@example.ru",
                    "role": "manager",
                    "active": True,
                    "created_at": "2026-11-27T10:00:00+00:00",
                }
            ]
        }
    )
    id: str
    user_id: str
    name: str | None
    email: str | None
    role: str
    active: bool = True
    created_at: datetime | None = None
    calendar_url: str | None = Field(default=None, description="Only for GET /users/me.")
    api_key: str | None = Field(default=None, description="Only in the answer to POST; shown once.")


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class SettingsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "default_region": "RU",
                    "managers_see_all": False,
                    "sla_minutes": 15,
                    "own_domains": ["romashka.ru"],
                    "timezone": "Europe/Moscow",
                }
            ]
        }
    )
    default_region: str
    managers_see_all: bool
    sla_minutes: int
    own_domains: list[str]
    timezone: str
    currency: str = "RUB"


class SettingsPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"managers_see_all": True, "own_domains": ["romashka.ru"]}]},
    )
    default_region: str | None = Field(default=None, min_length=2, max_length=2)
    managers_see_all: bool | None = None
    sla_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    own_domains: list[str] | None = Field(default=None, max_length=100)
    timezone: str | None = Field(default=None, max_length=64)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")


class KeyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "1C integration", "user_id": None}]}
    )
    name: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, description="Whose key (admin only); default: the caller.")


class KeyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "9f2c4e1a7b3d5f60",
                    "user_id": "01jd7w3k9q8m2x4v6b5n7c0a1z",
                    "name": "1C integration",
                    "prefix": "crm_9f2c4e1a7b3d5f60_",
                    "created_at": "2026-11-27T10:00:00+00:00",
                    "last_used_at": "2026-11-27T11:30:00+00:00",
                    "revoked_at": None,
                    "active": True,
                }
            ]
        }
    )
    id: str
    user_id: str
    name: str | None = None
    prefix: str = Field(description="The non-secret start of the key, to recognise it.")
    created_at: datetime | None = None
    last_used_at: datetime | None = Field(default=None, description="Updated at most every few seconds.")
    revoked_at: datetime | None = None
    active: bool
    api_key: str | None = Field(default=None, description="Only in the answer to POST; shown once.")


class KeyPage(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


def _bearer(request: Request) -> str:
    authorization = request.headers.get("authorization") or ""
    if not authorization.lower().startswith("bearer "):
        raise Unauthorized("Send the root token as `Authorization: Bearer <token>`.")
    return authorization[7:].strip()


@router.post("/tenants", status_code=201, response_model=TenantOut, tags=["tenants"])
async def create_tenant(body: TenantIn, request: Request, gw: GW) -> dict[str, Any]:
    """Create a tenant (root token only). Answers the first admin's API key, once."""
    if not hmac.compare_digest(_bearer(request).encode(), gw.root_token.encode()):
        raise Forbidden("Only the root token may create tenants.")
    out = await gw.identity.create_tenant(body.name)
    return {"tenant_id": out["tenant_id"], "api_key": out["api_key"]}


class TenantView(BaseModel):
    tenant_id: str
    name: str
    created_at: datetime | None = None


@router.get("/tenants/{tenant_id}", response_model=TenantView, tags=["tenants"])
async def get_tenant(tenant_id: str, request: Request, gw: GW) -> dict[str, Any]:
    """A tenant: any with the root token; with an API key only the caller's own (else 404)."""
    token = _bearer(request)
    if not hmac.compare_digest(token.encode(), gw.root_token.encode()):
        p = await gw.identity.authenticate(request.headers.get("authorization"))
        if p.tenant_id != tenant_id:
            raise NotFound("tenant")
    doc = await gw.identity.db.tenants.find_one({"_id": tenant_id})
    if doc is None:
        raise NotFound("tenant")
    return {"tenant_id": doc["_id"], "name": doc["name"], "created_at": doc.get("created_at")}


@router.post("/users", status_code=201, response_model=UserOut, tags=["users"])
async def create_user(body: UserIn, p: Auth, gw: GW) -> dict[str, Any]:
    """Add a user (admin). The answer carries the user's first API key, shown once."""
    p.require("admin")
    out = await gw.identity.create_user(p, body.name, body.email, body.role)
    if body.password is not None:
        await gw.sessions.set_password(p.tenant_id, out["user_id"], body.password)
    user = await gw.identity.get_user(p, out["user_id"])
    return {**user, "api_key": out["api_key"]}


@router.get("/users", response_model=UserPage, tags=["users"])
async def list_users(
    p: Auth,
    gw: GW,
    limit: Limit = 50,
    cursor: Cursor = None,
    role: RoleName | None = Query(default=None, description="Only users of this role."),  # noqa: B008
) -> dict[str, Any]:
    """The tenant's users, oldest first."""
    return await gw.identity.list_users(p, limit, cursor, role)


@router.get("/users/me", response_model=UserOut, tags=["users"])
async def me(p: Auth, gw: GW) -> dict[str, Any]:
    """The caller, with its iCalendar feed URL (token included: keep it private)."""
    doc = await gw.identity.user_doc(p)
    view = gw.identity.user_view(doc)
    view["calendar_url"] = f"{gw.settings.base_url}/api/v1/calendar.ics?token={doc['calendar_token']}"
    return view


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"])
async def get_user(user_id: str, p: Auth, gw: GW) -> dict[str, Any]:
    """One user of the caller's tenant."""
    return await gw.identity.get_user(p, user_id)


@router.patch("/users/{user_id}", response_model=UserOut, tags=["users"])
async def patch_user(user_id: str, body: UserPatch, p: Auth, gw: GW) -> dict[str, Any]:
    """Change a user's name, role, sign-in email or active flag (admin)."""
    p.require("admin")
    return await gw.identity.update_user(p, user_id, body.model_dump(exclude_none=True))


@router.post("/api-keys", status_code=201, response_model=KeyOut, tags=["users"])
async def create_key(body: KeyIn, p: Auth, gw: GW) -> dict[str, Any]:
    """A new API key for the caller, or (admin) for another user. The secret is shown once;
    only its hash is stored."""
    return await gw.identity.create_key(p, body.user_id, body.name)


@router.get("/api-keys", response_model=KeyPage, tags=["users"])
async def list_keys(
    p: Auth,
    gw: GW,
    limit: Limit = 50,
    cursor: Cursor = None,
    user_id: str | None = Query(default=None, description="Only this user's keys."),
) -> dict[str, Any]:
    """Keys with their last use (never the secret). Admins see every key of the tenant; others
    their own."""
    return await gw.identity.list_keys(p, user_id, limit, cursor)


@router.get("/api-keys/{key_id}", response_model=KeyOut, tags=["users"])
async def get_key(key_id: str, p: Auth, gw: GW) -> dict[str, Any]:
    """One API key (never its secret): yours, or any of the tenant as admin."""
    return await gw.identity.get_key(p, key_id)


@router.delete("/api-keys/{key_id}", status_code=204, tags=["users"])
async def revoke_key(key_id: str, p: Auth, gw: GW) -> Response:
    """Revoke a key (yours, or any of the tenant as admin). Idempotent."""
    await gw.identity.revoke_key(p, key_id)
    return Response(status_code=204)


@router.get("/settings", response_model=SettingsOut, tags=["settings"])
async def get_settings(p: Auth, gw: GW) -> dict[str, Any]:
    """The tenant's settings (admin)."""
    p.require("admin")
    return await gw.identity.tenant_settings(p.tenant_id)


@router.patch("/settings", response_model=SettingsOut, tags=["settings"])
async def patch_settings(body: SettingsPatch, p: Auth, gw: GW) -> dict[str, Any]:
    """Change tenant settings (admin); services learn them from `tenant.settings_changed`."""
    p.require("admin")
    return await gw.identity.update_settings(p, body.model_dump(exclude_none=True))
