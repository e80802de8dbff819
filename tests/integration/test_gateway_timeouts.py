"""The gateway alone (no services behind it), in-process over ASGI: a service that does not answer
is a 504 problem after the RPC timeout, never a hang or a 500."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from shared.settings import Settings

pytestmark = pytest.mark.integration


async def test_silent_service_is_a_504_problem_after_the_rpc_timeout(
    rabbit: str, mongo_url: str, namespace: str, tmp_path: Path
) -> None:
    settings = Settings(
        rabbit_url=rabbit,
        mongo_url=mongo_url,
        namespace=namespace,
        data_dir=tmp_path,
        root_token="root-test",
        rpc_timeout_s=0.5,
    )
    app = create_app(settings, services=[], mongo_url=mongo_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            r = await client.post(
                "/api/v1/tenants", json={"name": "Solo"}, headers={"Authorization": "Bearer root-test"}
            )
            assert r.status_code == 201, r.text
            key = r.json()["api_key"]
            started = time.monotonic()
            r = await client.get("/api/v1/contacts", headers={"Authorization": f"Bearer {key}"})
            elapsed = time.monotonic() - started
    assert r.status_code == 504
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "timeout" and "contacts" in r.json()["detail"]
    # it waited for the configured 0.5 s, not for the 10 s default
    assert 0.4 < elapsed < 8
