"""Request-scoped dependencies: the gateway state and the calling principal."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from crm.hub import Hub
from gateway.identity import GatewayService, Principal
from gateway.sessions import COOKIE, CSRF_HEADER, Sessions
from services.common.access import require_writer
from services.contacts import api as contacts_api
from services.deals import api as deals_api
from shared.bus import RpcClient
from shared.contract import RpcRequest
from shared.errors import AppError, ValidationFailed
from shared.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    hub: Hub
    identity: GatewayService
    rpc: RpcClient
    root_token: str
    ingress: Any = None
    """The hook ingress when it runs in this process while connectors run in another (``crm run
    all``): its channel-health counts are kept in memory and written in the background."""

    async def settle_hook_health(self) -> None:
        """Write this process's unwritten channel-health counts before health is read from the
        connectors service, so a hook answered here is counted in what the caller reads next."""
        if self.ingress is not None:
            await self.ingress.flush_health()

    @cached_property
    def sessions(self) -> Sessions:
        """Console sign-in: passwords and cookie sessions on the gateway's database."""
        return Sessions(self.identity)

    async def call(self, service: str, method: str, p: Principal | None, **args: Any) -> Any:
        return await self.rpc.call(service, method, p.ctx() if p else {}, **args)

    async def ask(self, request: RpcRequest, p: Principal | None, *, timeout: float | None = None) -> Any:
        """Send a typed request of a service's contract (``services/<name>/api.py``); the answer
        as the service sent it (JSON)."""
        args = request.model_dump(mode="json", exclude_unset=True, by_alias=True)
        return await self.rpc.call(
            request.SERVICE, request.METHOD, p.ctx() if p else {}, timeout=timeout, **args
        )

    async def check_refs(self, p: Principal, refs: dict[str, Any]) -> None:
        """422 naming each field of ``refs`` that points at no record the caller can see:
        ``contact_id`` (contacts), ``deal_id`` (deals), ``owner_id``/``assignee_id`` (active users
        of the tenant). Absent and null values are not checked (null clears a reference). Every
        caller writes, so a viewer is refused (403) before anything is looked up."""
        require_writer(p.ctx())
        errors: dict[str, str] = {}
        for field in USER_REFS:
            user_id = refs.get(field)
            if isinstance(user_id, str) and not await self.identity.active_user(p.tenant_id, user_id):
                errors[field] = "is not an active user of this tenant"
        for field, (service, method, noun) in RECORD_REFS.items():
            record_id = refs.get(field)
            if not isinstance(record_id, str):
                continue
            try:
                await self.call(service, method, p, **{field: record_id})
            except AppError as exc:
                if exc.status == 410:
                    errors[field] = f"this {noun} was erased"
                elif exc.status == 404:
                    errors[field] = f"is not a {noun} of this tenant"
                else:
                    raise
        if errors:
            raise ValidationFailed(errors)


USER_REFS = ("owner_id", "assignee_id")
RECORD_REFS = {
    "contact_id": (contacts_api.GetContact.SERVICE, contacts_api.GetContact.METHOD, "contact"),
    "deal_id": (deals_api.GetDeal.SERVICE, deals_api.GetDeal.METHOD, "deal"),
}


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return,unused-ignore]


GW = Annotated[Gateway, Depends(get_gateway)]


async def get_principal(request: Request, gw: GW) -> Principal:
    """The caller, from ``Authorization: Bearer <api key>``, else from the console's session
    cookie (writes then need its ``X-CSRF-Token``); kept on the request for the audit log."""
    authorization = request.headers.get("authorization")
    token = request.cookies.get(COOKIE)
    if authorization is None and token:
        principal = await gw.sessions.authenticate(token, request.method, request.headers.get(CSRF_HEADER))
    else:
        principal = await gw.identity.authenticate(authorization)
    request.state.principal = principal
    return principal


Auth = Annotated[Principal, Depends(get_principal)]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size (default 50, max 500).")]
Cursor = Annotated[str | None, Query(description="The `next_cursor` of the previous page.")]
