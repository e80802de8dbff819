"""Tenants, users, API keys and tenant settings: the gateway's own data (not business data).

API keys look like ``crm_<key id>_<secret>``; only a SHA-256 of the secret is stored, so a key is
shown once. Every request runs as one user of one tenant (:class:`Principal`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo import IndexModel

from shared.clock import new_id
from shared.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from shared.events import TenantSettingsChanged, UserChanged
from shared.mongo import UnitOfWork
from shared.normalize import normalize_email
from shared.service import Service

Role = Literal["admin", "manager", "viewer"]
ROLES: tuple[str, ...] = ("admin", "manager", "viewer")


class TenantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_region: str = Field(default="RU", min_length=2, max_length=2)
    managers_see_all: bool = False
    sla_minutes: int = Field(default=15, ge=1, le=7 * 24 * 60)
    own_domains: list[str] = Field(default_factory=list)
    timezone: str = "Europe/Moscow"

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str) -> str:
        import phonenumbers

        v = v.upper()
        if v not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("not a region phonenumbers knows (ISO 3166-1 alpha-2)")
        return v

    @field_validator("own_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return sorted({d.strip().lower().lstrip("@") for d in v if d.strip()})

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown IANA time zone") from exc
        return v


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    user_id: str
    role: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def ctx(self) -> dict[str, Any]:
        """What services receive with every call: who asks, and the tenant's settings."""
        return {
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "role": self.role,
            "settings": self.settings,
        }

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"The {self.role} role may not do this.")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_key() -> tuple[str, str, str]:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(24)
    return key_id, f"crm_{key_id}_{secret}", _hash(secret)


class GatewayService(Service):
    name = "gateway"
    indexes: ClassVar = {
        "tenants": [IndexModel([("created_at", 1)])],
        "users": [
            IndexModel([("tenant_id", 1), ("_id", 1)]),
            IndexModel([("calendar_token", 1)], unique=True, sparse=True),
            IndexModel(
                [("tenant_id", 1), ("email", 1)],
                unique=True,
                partialFilterExpression={"email": {"$type": "string"}},
            ),
        ],
        "api_keys": [IndexModel([("tenant_id", 1), ("user_id", 1)])],
        "idempotency": [
            IndexModel([("expires_at", 1)], expireAfterSeconds=0),
        ],
    }

    def setup(self) -> None:
        self._cache: dict[str, tuple[float, Principal]] = {}

    # ---- tenants ----------------------------------------------------------------------------

    async def create_tenant(self, name: str) -> dict[str, Any]:
        name = name.strip()
        if not name:
            raise ValidationFailed({"name": "must not be empty"})
        tenant_id = new_id()
        user_id = new_id()
        key_id, key, digest = _new_key()
        settings = TenantSettings().model_dump()

        async def unit(uow: UnitOfWork) -> None:
            now = uow.now
            s = uow.session
            await uow.db.tenants.insert_one(
                {"_id": tenant_id, "name": name, "settings": settings, "created_at": now}, session=s
            )
            await uow.db.users.insert_one(
                {
                    "_id": user_id,
                    "tenant_id": tenant_id,
                    "name": "Administrator",
                    "email": None,
                    "role": "admin",
                    "active": True,
                    "calendar_token": secrets.token_urlsafe(24),
                    "created_at": now,
                },
                session=s,
            )
            await uow.db.api_keys.insert_one(
                {
                    "_id": key_id,
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "hash": digest,
                    "created_at": now,
                    "revoked_at": None,
                    "last_used_at": None,
                },
                session=s,
            )
            uow.emit("tenant.settings_changed", tenant_id, TenantSettingsChanged(settings=settings))
            uow.emit(
                "user.changed", tenant_id, UserChanged(user_id=user_id, name="Administrator", role="admin")
            )

        await self.store.atomic(unit)
        return {"tenant_id": tenant_id, "api_key": key, "user_id": user_id}

    async def tenant_settings(self, tenant_id: str) -> dict[str, Any]:
        doc = await self.db.tenants.find_one({"_id": tenant_id}, {"settings": 1})
        if not doc:
            raise NotFound("tenant")
        return dict(doc["settings"])

    async def update_settings(self, p: Principal, changes: dict[str, Any]) -> dict[str, Any]:
        p.require("admin")
        current = await self.tenant_settings(p.tenant_id)
        merged = TenantSettings.model_validate({**current, **changes}).model_dump()

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.tenants.update_one(
                {"_id": p.tenant_id}, {"$set": {"settings": merged}}, session=uow.session
            )
            uow.emit("tenant.settings_changed", p.tenant_id, TenantSettingsChanged(settings=merged))

        await self.store.atomic(unit)
        self._cache.clear()
        return merged

    # ---- users and keys ---------------------------------------------------------------------

    async def create_user(self, p: Principal, name: str, email: str | None, role: str) -> dict[str, Any]:
        p.require("admin")
        errors: dict[str, str] = {}
        if not name.strip():
            errors["name"] = "must not be empty"
        norm = normalize_email(email) if email else None
        if email and not norm:
            errors["email"] = "is not a valid email address"
        if role not in ROLES:
            errors["role"] = "must be one of admin, manager, viewer"
        if errors:
            raise ValidationFailed(errors)
        if norm and await self.db.users.find_one({"tenant_id": p.tenant_id, "email": norm}):
            raise ValidationFailed({"email": "a user with this email exists"})
        user_id = new_id()
        key_id, key, digest = _new_key()

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.users.insert_one(
                {
                    "_id": user_id,
                    "tenant_id": p.tenant_id,
                    "name": name.strip(),
                    "email": norm,
                    "role": role,
                    "active": True,
                    "calendar_token": secrets.token_urlsafe(24),
                    "created_at": uow.now,
                },
                session=uow.session,
            )
            await uow.db.api_keys.insert_one(
                {
                    "_id": key_id,
                    "tenant_id": p.tenant_id,
                    "user_id": user_id,
                    "hash": digest,
                    "created_at": uow.now,
                    "revoked_at": None,
                    "last_used_at": None,
                },
                session=uow.session,
            )
            uow.emit("user.changed", p.tenant_id, UserChanged(user_id=user_id, name=name.strip(), role=role))

        await self.store.atomic(unit)
        return {"user_id": user_id, "api_key": key, "name": name.strip(), "email": norm, "role": role}

    async def list_users(self, p: Principal) -> list[dict[str, Any]]:
        cursor = self.db.users.find({"tenant_id": p.tenant_id}).sort("_id", 1)
        return [self.user_view(u) for u in await cursor.to_list(length=10_000)]

    async def get_user(self, p: Principal, user_id: str) -> dict[str, Any]:
        doc = await self.db.users.find_one({"tenant_id": p.tenant_id, "_id": user_id})
        if not doc:
            raise NotFound("user")
        return self.user_view(doc)

    async def user_doc(self, p: Principal) -> dict[str, Any]:
        doc = await self.db.users.find_one({"tenant_id": p.tenant_id, "_id": p.user_id})
        if not doc:
            raise NotFound("user")
        return doc

    async def user_by_calendar_token(self, token: str) -> dict[str, Any] | None:
        if not token:
            return None
        return await self.db.users.find_one({"calendar_token": token, "active": True})

    @staticmethod
    def user_view(doc: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": doc["_id"],
            "user_id": doc["_id"],
            "name": doc.get("name"),
            "email": doc.get("email"),
            "role": doc["role"],
            "active": doc.get("active", True),
            "created_at": doc.get("created_at"),
        }

    # ---- authentication ---------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("Send `Authorization: Bearer <api key>`.")
        key = authorization[7:].strip()
        cached = self._cache.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "crm":
            raise Unauthorized("The API key is not valid.")
        doc = await self.db.api_keys.find_one({"_id": parts[1]})
        if not doc or doc.get("revoked_at") or not hmac.compare_digest(doc["hash"], _hash(parts[2])):
            raise Unauthorized("The API key is not valid.")
        user = await self.db.users.find_one({"_id": doc["user_id"], "tenant_id": doc["tenant_id"]})
        if not user or not user.get("active", True):
            raise Unauthorized("The API key is not valid.")
        settings = await self.tenant_settings(doc["tenant_id"])
        principal = Principal(doc["tenant_id"], user["_id"], user["role"], user.get("name", ""), settings)
        self._cache[key] = (time.monotonic() + 5.0, principal)
        await self.db.api_keys.update_one({"_id": parts[1]}, {"$set": {"last_used_at": self.clock.now()}})
        return principal
