"""Unauthenticated hooks cannot fill the database: ``/hooks/*`` is rate-limited per channel and per
client address, and a rejected hook is kept truncated, at most a quota per channel. The connectors
ingress app on the real MongoDB-protocol server, over httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.connectors import hookguard
from services.connectors.main import ConnectorsService
from shared.errors import ValidationFailed
from tests.support.services import connectors_service

pytestmark = pytest.mark.integration

CTX = {"tenant_id": "ten-hooks", "user_id": "u1", "role": "admin", "settings": {}}
SIGNED = {"kind": "form", "name": "Signed site", "secrets": {"hmac_secret": "s3cret"}}


async def ingress(svc: ConnectorsService, client: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=svc.ingress_app(), client=(client, 4711))
    return httpx.AsyncClient(transport=transport, base_url="http://hub")


@pytest.fixture
async def svc(mongo_url: str, namespace: str) -> AsyncIterator[ConnectorsService]:
    async with connectors_service(mongo_url, namespace, hook_rate=0, hook_client_rate=0) as service:
        yield service


async def test_rejected_hooks_are_kept_truncated_and_within_a_quota_per_channel(
    svc: ConnectorsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hookguard, "QUOTA", 5)
    channel = await svc.create_channel(CTX, {"body": SIGNED})
    big = b'{"name": "' + b"x" * 1_000_000 + b'"}'
    async with await ingress(svc) as http:
        for _ in range(12):
            r = await http.post(
                f"/{channel['id']}", content=big, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 401
    kept = await svc.db.rejected_hooks.find({"channel_id": channel["id"]}).to_list(100)
    assert len(kept) == 5
    assert all(len(d["body"]) == hookguard.BODY_KEEP and d["truncated"] for d in kept)
    assert all(d["body_size"] == len(big) for d in kept)


async def test_hooks_over_the_client_rate_get_429_before_anything_is_stored(
    mongo_url: str, namespace: str
) -> None:
    async with connectors_service(mongo_url, namespace, hook_rate=0, hook_client_rate=0.001) as svc:
        channel = await svc.create_channel(CTX, {"body": SIGNED})
        async with await ingress(svc) as http:
            statuses = [
                (
                    await http.post(
                        f"/{channel['id']}", content=b"{}", headers={"Content-Type": "application/json"}
                    )
                ).status_code
                for _ in range(3)
            ]
            assert statuses == [401, 429, 429]  # burst 1 at this rate
            r = await http.post(
                f"/{channel['id']}", content=b"{}", headers={"Content-Type": "application/json"}
            )
            assert r.headers["Retry-After"].isdigit()
        # Another address still gets through (to its 401).
        async with await ingress(svc, "198.51.100.9") as other:
            r = await other.post(
                f"/{channel['id']}", content=b"{}", headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 401
        assert await svc.db.rejected_hooks.count_documents({"channel_id": channel["id"]}) == 2


async def test_hooks_over_the_channel_rate_get_429_from_any_address(mongo_url: str, namespace: str) -> None:
    async with connectors_service(mongo_url, namespace, hook_rate=0.001, hook_client_rate=0) as svc:
        channel = await svc.create_channel(CTX, {"body": SIGNED})
        statuses = []
        for n in range(3):
            async with await ingress(svc, f"198.51.100.{n + 1}") as http:
                r = await http.post(
                    f"/{channel['id']}", content=b"{}", headers={"Content-Type": "application/json"}
                )
                statuses.append(r.status_code)
        assert statuses == [401, 429, 429]


async def test_a_vk_channel_needs_its_secret_and_optional_secret_kinds_say_when_unprotected(
    svc: ConnectorsService,
) -> None:
    with pytest.raises(ValidationFailed) as exc:
        await svc.create_channel(
            CTX, {"body": {"kind": "vk", "name": "VK", "secrets": {"confirmation": "c0nf"}}}
        )
    assert "secrets.secret" in exc.value.errors
    open_form = await svc.create_channel(CTX, {"body": {"kind": "form", "name": "Open"}})
    assert open_form["health"]["unauthenticated"] is True
    assert "secrets.token or secrets.hmac_secret" in open_form["health"]["warning"]
    signed = await svc.create_channel(CTX, {"body": SIGNED})
    assert signed["health"]["unauthenticated"] is False and signed["health"]["warning"] is None
    pbx = await svc.create_channel(CTX, {"body": {"kind": "asterisk", "name": "PBX"}})
    assert pbx["health"]["unauthenticated"] is True
    twilio = await svc.create_channel(
        CTX, {"body": {"kind": "twilio", "name": "T", "secrets": {"auth_token": "tok"}}}
    )
    assert "unauthenticated" not in twilio["health"]  # a signing kind: its secret is required
