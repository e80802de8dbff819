"""Console sign-in: sessions (cookie + CSRF token) and passwords."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth
from gateway.routes.core import UserOut
from gateway.sessions import COOKIE, MIN_PASSWORD
from shared.errors import Unauthorized

router = APIRouter(prefix="/api/v1", tags=["sessions"])

PROBLEM = {"content": {"application/problem+json": {"schema": {"type": "object"}}}}


class SessionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "anna@example.ru", "password": "correct horse battery"}]},
    )
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class SessionTenant(BaseModel):
    tenant_id: str
    currency: str = Field(description="The tenant's currency (ISO 4217), for showing money.")
    timezone: str


class SessionOut(BaseModel):
    csrf_token: str = Field(description="Send it as `X-CSRF-Token` on every cookie-authenticated write.")
    expires_at: datetime
    user: UserOut
    tenant: SessionTenant


class OwnPasswordIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"current_password": "old secret 123", "new_password": "new secret 456"}]
        },
    )
    current_password: str | None = Field(
        default=None,
        max_length=1024,
        description="Required once the user has a password; a user without one sets it with an API key.",
    )
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


class PasswordIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"new_password": "new secret 456"}]}
    )
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


def _secure(gw: Any) -> bool:
    return str(gw.settings.base_url).startswith("https://")


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionOut,
    responses={401: {"description": "Wrong email or password", **PROBLEM}, 429: PROBLEM},
)
async def sign_in(body: SessionIn, request: Request, response: Response, gw: GW) -> dict[str, Any]:
    """Sign in with email and password: sets the HttpOnly, SameSite=Strict session cookie and
    answers the CSRF token. A wrong pair and an unknown email get the same 401; repeated failures
    (per account and per client address) get 429 with `Retry-After`."""
    client = request.client.host if request.client else "?"
    token, view = await gw.sessions.sign_in(body.email, body.password, client)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(gw.sessions.ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(gw),
    )
    response.headers["Cache-Control"] = "no-store"
    return view


@router.get("/sessions/current", response_model=SessionOut, responses={401: PROBLEM})
async def current_session(request: Request, response: Response, gw: GW) -> dict[str, Any]:
    """The session of the cookie: its user and CSRF token (so a reloaded console page has it)."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise Unauthorized("Not signed in.")
    response.headers["Cache-Control"] = "no-store"
    return await gw.sessions.current(token)


@router.delete("/sessions/current", status_code=204, responses={401: PROBLEM, 403: PROBLEM})
async def sign_out(request: Request, p: Auth, gw: GW) -> Response:
    """Sign out: the session is deleted on the server and the cookie cleared."""
    token = request.cookies.get(COOKIE)
    if token:
        await gw.sessions.sign_out(token)
    out = Response(status_code=204)
    out.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(gw))
    return out


@router.put("/users/me/password", status_code=204, tags=["users"], responses={422: PROBLEM})
async def change_own_password(body: OwnPasswordIn, request: Request, p: Auth, gw: GW) -> Response:
    """Change one's own password (`current_password` needed once there is one). Other sessions of
    the user end."""
    await gw.sessions.change_own(p, body.current_password, body.new_password, request.cookies.get(COOKIE))
    return Response(status_code=204)


@router.put(
    "/users/{user_id}/password", status_code=204, tags=["users"], responses={403: PROBLEM, 404: PROBLEM}
)
async def set_password(user_id: str, body: PasswordIn, p: Auth, gw: GW) -> Response:
    """Set a user's password (admin). The user's sessions end."""
    p.require("admin")
    await gw.sessions.set_password(p.tenant_id, user_id, body.new_password)
    await gw.sessions.revoke_user(user_id)
    return Response(status_code=204)
