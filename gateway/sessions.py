"""Passwords and browser sessions of the operator console.

- Passwords are stored as argon2id hashes (``users.password_hash``), never in logs or answers.
- A session is a random token in an HttpOnly, SameSite=Strict cookie; only its SHA-256 is stored
  (``sessions``, expired by a TTL index). Each session has a CSRF token: cookie-authenticated writes
  must send it as ``X-CSRF-Token``.
- Failed sign-ins are limited per account (email) and per client address (:class:`SignInLimiter`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from collections import deque
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.identity import GatewayService, Principal
from shared.errors import AppError, Forbidden, NotFound, Unauthorized, ValidationFailed
from shared.normalize import normalize_email

COOKIE = "crm_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MIN_PASSWORD = 10
WRONG_PAIR = "The email or the password is wrong."


class TooManyAttempts(AppError):
    status, code, title = 429, "too_many_sign_ins", "Too many failed sign-ins"


class SignInLimiter:
    """Failed sign-ins within a sliding window, per account and per client. Over either limit,
    further attempts (even with the right password) wait until the oldest failure leaves the window.
    ``now`` is a monotonic clock in seconds, passed in so tests control time."""

    def __init__(
        self,
        per_account: int = 5,
        per_client: int = 50,
        window_s: float = 900.0,
        now: Any = time.monotonic,
    ) -> None:
        self.per_account = per_account
        self.per_client = per_client
        self.window_s = window_s
        self.now = now
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, at: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= at - self.window_s:
            q.popleft()
        return q

    def retry_after(self, account: str, client: str) -> int:
        """0 when an attempt may be made, else whole seconds to wait."""
        at = self.now()
        wait = 0.0
        for key, limit in ((f"a:{account}", self.per_account), (f"c:{client}", self.per_client)):
            q = self._recent(key, at)
            if len(q) >= limit:
                wait = max(wait, q[len(q) - limit] + self.window_s - at)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failed(self, account: str, client: str) -> None:
        at = self.now()
        if len(self._failures) > 100_000:
            self._failures.clear()
        for key in (f"a:{account}", f"c:{client}"):
            self._recent(key, at).append(at)

    def succeeded(self, account: str) -> None:
        self._failures.pop(f"a:{account}", None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Sign-in, sign-out, session lookup and password changes, on the gateway's database."""

    def __init__(
        self,
        identity: GatewayService,
        *,
        ttl_s: int = 7 * 24 * 3600,
        limiter: SignInLimiter | None = None,
    ) -> None:
        self.identity = identity
        self.ttl = timedelta(seconds=ttl_s)
        self.limiter = limiter or SignInLimiter()
        self.hasher = PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        self._cache: dict[str, tuple[float, Principal, str]] = {}

    @property
    def db(self) -> Any:
        return self.identity.db

    # ---- passwords ------------------------------------------------------------------------

    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Constant work whether or not there is a hash (unknown emails cost the same)."""
        try:
            return await asyncio.to_thread(self.hasher.verify, stored or self._dummy, password) and bool(
                stored
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def set_password(self, tenant_id: str, user_id: str, new_password: str) -> None:
        if len(new_password) < MIN_PASSWORD:
            raise ValidationFailed({"new_password": f"must be at least {MIN_PASSWORD} characters"})
        digest = await self.hash_password(new_password)
        res = await self.db.users.update_one(
            {"tenant_id": tenant_id, "_id": user_id}, {"$set": {"password_hash": digest}}
        )
        if res.matched_count == 0:
            raise NotFound("user")
        self._cache.clear()

    async def change_own(
        self, p: Principal, current: str | None, new_password: str, keep_session: str | None
    ) -> None:
        """The caller's own password. ``current_password`` is required once a password exists;
        a user without one yet (the tenant's first admin) sets it with its API key."""
        doc = await self.identity.user_doc(p)
        stored = doc.get("password_hash")
        if stored:
            if not current:
                raise ValidationFailed({"current_password": "is required"})
            if not await self.verify(stored, current):
                raise ValidationFailed({"current_password": "is not correct"})
        elif p.key_id is None:
            raise Forbidden("Set a first password with an API key.")
        await self.set_password(p.tenant_id, p.user_id, new_password)
        await self.revoke_user(p.user_id, except_token=keep_session)

    async def revoke_user(self, user_id: str, except_token: str | None = None) -> None:
        """Sign the user out everywhere (but the session ``except_token``)."""
        flt: dict[str, Any] = {"user_id": user_id}
        if except_token:
            flt["_id"] = {"$ne": _digest(except_token)}
        await self.db.sessions.delete_many(flt)
        self._cache.clear()

    # ---- sessions ------------------------------------------------------------------------

    async def sign_in(self, email: str, password: str, client: str) -> tuple[str, dict[str, Any]]:
        """A new session for the user with this email and password: ``(token, session answer)``.
        401 for a wrong pair and for an unknown email alike; 429 over the failure limits."""
        account = normalize_email(email) or email.strip().lower()
        wait = self.limiter.retry_after(account, client)
        if wait:
            raise TooManyAttempts(
                "Too many failed sign-ins; try again later.", headers={"Retry-After": str(wait)}
            )
        candidates = await self.db.users.find(
            {"email": account, "active": {"$ne": False}, "password_hash": {"$type": "string"}}
        ).to_list(length=20)
        user: dict[str, Any] | None = None
        if not candidates:
            await self.verify(None, password)
        for doc in candidates:
            if await self.verify(doc["password_hash"], password):
                user = doc
                break
        if user is None:
            self.limiter.failed(account, client)
            raise Unauthorized(WRONG_PAIR)
        self.limiter.succeeded(account)
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = self.identity.clock.now()
        doc = {
            "_id": _digest(token),
            "tenant_id": user["tenant_id"],
            "user_id": user["_id"],
            "csrf": csrf,
            "created_at": now,
            "expires_at": now + self.ttl,
        }
        await self.db.sessions.insert_one(doc)
        return token, await self.view(doc, user)

    async def view(self, session: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        settings = await self.identity.tenant_settings(session["tenant_id"])
        return {
            "csrf_token": session["csrf"],
            "expires_at": session["expires_at"],
            "user": self.identity.user_view(user),
            "tenant": {
                "tenant_id": session["tenant_id"],
                "currency": settings.get("currency") or "RUB",
                "timezone": settings.get("timezone") or "Europe/Moscow",
            },
        }

    async def current(self, token: str) -> dict[str, Any]:
        session = await self.db.sessions.find_one({"_id": _digest(token)})
        if not session:
            raise Unauthorized("Not signed in.")
        user = await self.db.users.find_one({"_id": session["user_id"], "tenant_id": session["tenant_id"]})
        if not user:
            raise Unauthorized("Not signed in.")
        return await self.view(session, user)

    async def principal(self, token: str) -> tuple[Principal, str]:
        """The signed-in user and the session's CSRF token; 401 when the session is unknown,
        expired or its user inactive."""
        cached = self._cache.get(token)
        if cached and cached[0] > time.monotonic():
            return cached[1], cached[2]
        session = await self.db.sessions.find_one({"_id": _digest(token)})
        now = self.identity.clock.now()
        if not session or _aware(session["expires_at"]) <= now:
            raise Unauthorized("The session has ended; sign in again.")
        user = await self.db.users.find_one({"_id": session["user_id"], "tenant_id": session["tenant_id"]})
        if not user or not user.get("active", True):
            raise Unauthorized("The session has ended; sign in again.")
        settings = await self.identity.tenant_settings(session["tenant_id"])
        principal = Principal(session["tenant_id"], user["_id"], user["role"], user.get("name", ""), settings)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (time.monotonic() + 5.0, principal, session["csrf"])
        return principal, session["csrf"]

    async def authenticate(self, token: str, method: str, csrf_header: str | None) -> Principal:
        principal, csrf = await self.principal(token)
        if method not in SAFE_METHODS and not (
            csrf_header and hmac.compare_digest(csrf_header.encode(), csrf.encode())
        ):
            raise Forbidden("Send the session's CSRF token as `X-CSRF-Token`.")
        return principal

    async def sign_out(self, token: str) -> None:
        await self.db.sessions.delete_one({"_id": _digest(token)})
        self._cache.pop(token, None)


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if getattr(value, "tzinfo", 1) is None else value
