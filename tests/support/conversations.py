"""Reading conversations through the gateway, for the conversation e2e tests."""

from __future__ import annotations

from typing import Any

from tests.support.hub import Api


def conversations(admin: Api, **params: Any) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/conversations", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def messages(admin: Api, conversation_id: str) -> list[dict[str, Any]]:
    r = admin.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])
