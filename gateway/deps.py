"""Request-scoped dependencies: the gateway state and the calling principal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from gateway.identity import GatewayService, Principal
from shared.bus import RpcClient
from shared.hub import Hub
from shared.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    hub: Hub
    identity: GatewayService
    rpc: RpcClient
    root_token: str

    async def call(self, service: str, method: str, p: Principal | None, **args: Any) -> Any:
        return await self.rpc.call(service, method, p.ctx() if p else {}, **args)


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return,unused-ignore]


GW = Annotated[Gateway, Depends(get_gateway)]


async def get_principal(request: Request, gw: GW) -> Principal:
    """The caller, from ``Authorization: Bearer <api key>``; kept on the request for the audit log."""
    principal = await gw.identity.authenticate(request.headers.get("authorization"))
    request.state.principal = principal
    return principal


Auth = Annotated[Principal, Depends(get_principal)]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size (default 50, max 500).")]
Cursor = Annotated[str | None, Query(description="The `next_cursor` of the previous page.")]
