"""Tenants, users, API keys and tenant settings: the gateway's own data (not business data).

API keys look like ``crm_<key id>_<secret>``; only a SHA-256 of the secret is stored, so a key is
shown once. Every request runs as one user of one tenant (:class:`Principal`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymongo import IndexModel

from gateway.live import LiveFeed
from gateway.metrics import Metrics
from gateway.webhooks import Webhooks, WebhookSettings
from shared.clock import new_id
from shared.errors import Forbidden, NotFound, Unauthorized, ValidationFailed, problem_from_pydantic
from shared.events import Envelope, TenantSettingsChanged, UserChanged
from shared.mongo import UnitOfWork
from shared.netguard import UrlGuard
from shared.normalize import normalize_email
from shared.pagination import DEFAULT_LIMIT, decode_cursor, page
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
    currency: str = Field(
        default="RUB", pattern=r"^[A-Z]{3}$", description="ISO 4217; the console shows money in it."
    )

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
    key_id: str | None = None

    def may_see(self, payload: dict[str, Any]) -> bool:
        """Whether an event about a record with this payload is within the caller's visibility:
        admins (and everyone when ``managers_see_all``) see all; others what they own or what
        nobody owns (``owner_id`` / ``assignee_id`` when the payload carries them)."""
        if self.role == "admin" or self.settings.get("managers_see_all"):
            return True
        for key in ("owner_id", "assignee_id"):
            if key in payload and payload[key] not in (None, self.user_id):
                return False
        return True

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
        "audit": [IndexModel([("tenant_id", 1), ("record_id", 1), ("_id", -1)])],
        "subscriptions": [IndexModel([("tenant_id", 1), ("_id", 1)])],
        "deliveries": [
            IndexModel([("tenant_id", 1), ("subscription_id", 1), ("_id", -1)]),
            IndexModel([("state", 1), ("next_attempt_at", 1)]),
        ],
        "idempotency": [
            IndexModel([("expires_at", 1)], expireAfterSeconds=0),
        ],
        # console sign-in (gateway/sessions.py)
        "sessions": [
            IndexModel([("expires_at", 1)], expireAfterSeconds=0),
            IndexModel([("user_id", 1)]),
        ],
    }

    def setup(self) -> None:
        self._cache: dict[str, tuple[float, Principal]] = {}
        self.metrics = Metrics()
        self.live = LiveFeed(self.settings.live_buffer, self.settings.live_client_buffer)
        self.webhooks = Webhooks(
            self.db,
            self.rt.secrets,
            self.clock,
            WebhookSettings(),
            observe=self.metrics.webhook_outcome,
            guard=UrlGuard.from_settings(self.settings),
        )
        # Outbound webhooks: this service's durable queue on every public event (not lost while
        # the gateway is down), and the automation rules' webhook action.
        self.on("#", self.webhooks.on_event, consumer="gateway-webhooks")
        self.on("rule.webhook_requested", self.webhooks.on_event, consumer="gateway-webhooks")
        self._live_channel: Any = None

    async def _start_live(self) -> None:
        """Live stream: this process's own exclusive queue on every public event (gone with the
        process), acknowledged on arrival."""
        bus = self.rt.bus
        self._live_channel = await bus.channel(256)
        queue = await bus.step(
            "declaring the live-stream queue",
            self._live_channel.declare_queue(
                f"{self.rt.topology.ns}.gateway-live.{uuid.uuid4().hex[:12]}",
                exclusive=True,
                auto_delete=True,
            ),
        )
        await bus.step("binding the live-stream queue", queue.bind(self.rt.topology.events, routing_key="#"))
        await bus.step("consuming the live stream", queue.consume(self._on_live, no_ack=True))

    async def _on_live(self, message: Any) -> None:
        try:
            env = Envelope.model_validate_json(message.body)
        except (ValueError, TypeError):
            return
        self.metrics.observe_event(env.occurred_at, self.clock)
        self.live.publish(env)

    async def on_start(self) -> None:
        await self._start_live()
        self.webhooks.start()

    async def on_stop(self) -> None:
        await self.webhooks.stop()
        if self._live_channel is not None:
            with contextlib.suppress(Exception):
                await self._live_channel.close()
            self._live_channel = None

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
        try:
            merged = TenantSettings.model_validate({**current, **changes}).model_dump()
        except ValidationError as exc:
            raise problem_from_pydantic(exc) from exc

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

    async def list_users(
        self, p: Principal, limit: int = DEFAULT_LIMIT, cursor: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        """The tenant's users, oldest first (``_id`` order), a page at a time."""
        flt: dict[str, Any] = {"tenant_id": p.tenant_id}
        if role:
            flt["role"] = role
        after = decode_cursor(cursor)
        if after:
            flt["_id"] = {"$gt": str(after[0])}
        docs = await self.db.users.find(flt).sort("_id", 1).limit(limit + 1).to_list(length=limit + 1)
        return page([self.user_view(u) for u in docs], limit, lambda u: [u["id"]])

    async def update_user(self, p: Principal, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a user's name, role or active flag (admin). An admin may not demote or
        deactivate itself, so a tenant never locks itself out by accident."""
        p.require("admin")
        doc = await self.db.users.find_one({"tenant_id": p.tenant_id, "_id": user_id})
        if not doc:
            raise NotFound("user")
        if "role" in changes and changes["role"] not in ROLES:
            raise ValidationFailed({"role": "must be one of admin, manager, viewer"})
        if user_id == p.user_id and (
            changes.get("active") is False or changes.get("role", "admin") != "admin"
        ):
            raise ValidationFailed({"role": "an admin may not demote or deactivate itself"})
        if "name" in changes:
            changes["name"] = str(changes["name"]).strip()
            if not changes["name"]:
                raise ValidationFailed({"name": "must not be empty"})
        if "email" in changes:
            norm = normalize_email(changes["email"]) if changes["email"] else None
            if changes["email"] and not norm:
                raise ValidationFailed({"email": "is not a valid email address"})
            if norm and await self.db.users.find_one(
                {"tenant_id": p.tenant_id, "email": norm, "_id": {"$ne": user_id}}
            ):
                raise ValidationFailed({"email": "a user with this email exists"})
            changes["email"] = norm
        merged = {**doc, **changes}

        async def unit(uow: UnitOfWork) -> None:
            if changes:
                await uow.db.users.update_one(
                    {"tenant_id": p.tenant_id, "_id": user_id}, {"$set": changes}, session=uow.session
                )
            uow.emit(
                "user.changed",
                p.tenant_id,
                UserChanged(
                    user_id=user_id,
                    name=merged.get("name"),
                    role=merged["role"],
                    active=merged.get("active", True),
                ),
            )

        await self.store.atomic(unit)
        self._cache.clear()
        return self.user_view(merged)

    # ---- API keys ---------------------------------------------------------------------------

    @staticmethod
    def key_view(doc: dict[str, Any]) -> dict[str, Any]:
        """A key as clients may see it: never the secret nor its hash."""
        return {
            "id": doc["_id"],
            "user_id": doc["user_id"],
            "name": doc.get("name"),
            "prefix": f"crm_{doc['_id']}_",
            "created_at": doc.get("created_at"),
            "last_used_at": doc.get("last_used_at"),
            "revoked_at": doc.get("revoked_at"),
            "active": not doc.get("revoked_at"),
        }

    async def create_key(self, p: Principal, user_id: str | None, name: str | None) -> dict[str, Any]:
        """A new key for ``user_id`` (admin) or for the caller (anyone). The secret is shown once."""
        target = user_id or p.user_id
        if target != p.user_id:
            p.require("admin")
        user = await self.db.users.find_one({"tenant_id": p.tenant_id, "_id": target})
        if not user:
            raise NotFound("user")
        key_id, key, digest = _new_key()
        doc = {
            "_id": key_id,
            "tenant_id": p.tenant_id,
            "user_id": target,
            "name": name,
            "hash": digest,
            "created_at": self.clock.now(),
            "revoked_at": None,
            "last_used_at": None,
        }
        await self.db.api_keys.insert_one(doc)
        return {**self.key_view(doc), "api_key": key}

    def _key_scope(self, p: Principal) -> dict[str, Any]:
        """Admins manage every key of the tenant; others only their own."""
        flt: dict[str, Any] = {"tenant_id": p.tenant_id}
        if p.role != "admin":
            flt["user_id"] = p.user_id
        return flt

    async def list_keys(
        self, p: Principal, user_id: str | None, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> dict[str, Any]:
        flt = self._key_scope(p)
        if user_id:
            if p.role != "admin" and user_id != p.user_id:
                return {"items": [], "next_cursor": None}
            flt["user_id"] = user_id
        after = decode_cursor(cursor)
        if after:
            flt["_id"] = {"$gt": str(after[0])}
        docs = await self.db.api_keys.find(flt).sort("_id", 1).limit(limit + 1).to_list(length=limit + 1)
        return page([self.key_view(d) for d in docs], limit, lambda k: [k["id"]])

    async def get_key(self, p: Principal, key_id: str) -> dict[str, Any]:
        doc = await self.db.api_keys.find_one({**self._key_scope(p), "_id": key_id})
        if not doc:
            raise NotFound("API key")
        return self.key_view(doc)

    async def revoke_key(self, p: Principal, key_id: str) -> dict[str, Any]:
        """Revoke a key (idempotent). Takes effect at once in this process."""
        doc = await self.db.api_keys.find_one({**self._key_scope(p), "_id": key_id})
        if not doc:
            raise NotFound("API key")
        if not doc.get("revoked_at"):
            doc["revoked_at"] = self.clock.now()
            await self.db.api_keys.update_one({"_id": key_id}, {"$set": {"revoked_at": doc["revoked_at"]}})
        self._cache.clear()
        return self.key_view(doc)

    async def get_user(self, p: Principal, user_id: str) -> dict[str, Any]:
        doc = await self.db.users.find_one({"tenant_id": p.tenant_id, "_id": user_id})
        if not doc:
            raise NotFound("user")
        return self.user_view(doc)

    async def active_user(self, tenant_id: str, user_id: str) -> bool:
        doc = await self.db.users.find_one({"tenant_id": tenant_id, "_id": user_id}, {"active": 1})
        return bool(doc and doc.get("active", True))

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
        principal = Principal(
            doc["tenant_id"], user["_id"], user["role"], user.get("name", ""), settings, key_id=parts[1]
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + 5.0, principal)
        await self.db.api_keys.update_one({"_id": parts[1]}, {"$set": {"last_used_at": self.clock.now()}})
        return principal
