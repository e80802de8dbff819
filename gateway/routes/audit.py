"""The audit log: who changed what, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from gateway.audit import list_audit
from gateway.deps import GW, Auth, Cursor, Limit

router = APIRouter(prefix="/api/v1", tags=["audit"])


class AuditOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01jd7w3k9q8m2x4v6b5n7c0a1z",
                    "at": "2026-11-27T10:00:00+00:00",
                    "user_id": "01jd7w3k9q8m2x4v6b5n7c0a00",
                    "role": "manager",
                    "method": "PATCH",
                    "path": "/api/v1/contacts/01jd7x0000000000000000000a",
                    "route": "/api/v1/contacts/{contact_id}",
                    "status": 200,
                    "record_id": "01jd7x0000000000000000000a",
                }
            ]
        }
    )
    id: str
    at: datetime
    user_id: str
    role: str | None = None
    method: str
    path: str
    route: str | None = None
    status: int
    record_id: str | None = None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


@router.get("/audit", response_model=AuditPage)
async def audit(
    p: Auth,
    gw: GW,
    record_id: Annotated[str | None, Query(description="Only changes of this record.")] = None,
    user_id: Annotated[str | None, Query(description="Only changes by this user.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Successful changes (POST/PUT/PATCH/DELETE) in the tenant, newest first (admin)."""
    p.require("admin")
    return await list_audit(
        gw.identity.db, p.tenant_id, record_id=record_id, user_id=user_id, limit=limit, cursor=cursor
    )
