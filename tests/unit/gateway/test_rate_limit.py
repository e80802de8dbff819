"""The rate limiter keys on the parsed API key id (not the raw header) and limits failed
authentication by client address. Driven through a real ASGI app over httpx's ASGI transport."""

from __future__ import annotations

import uuid

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.middleware import RateLimit, rate_key

GOOD = "crm_0123456789abcdef_s3cret"


async def me(request: Request) -> JSONResponse:
    auth = request.headers.get("authorization", "")
    if auth.strip().partition(" ")[2].strip() != GOOD:
        return JSONResponse({"title": "Unauthorized"}, status_code=401)
    return JSONResponse({"ok": True})


def client(**limits: float) -> httpx.AsyncClient:
    app = RateLimit(Starlette(routes=[Route("/api/v1/users/me", me)]), **limits)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub")


def test_the_bucket_is_the_key_id_however_the_header_is_spelled() -> None:
    spellings = [
        f"Bearer {GOOD}",
        f"bEaReR {GOOD}",
        f"Bearer  {GOOD}",
        f"  BEARER {GOOD}  ",
        f"bearer\t{GOOD}",
    ]
    assert {rate_key(h.replace("\t", " "), "1.2.3.4") for h in spellings} == {"key:0123456789abcdef"}
    assert rate_key(None, "1.2.3.4") == "ip:1.2.3.4"


async def test_respelling_the_header_does_not_buy_a_fresh_bucket() -> None:
    async with client(rate=0.001, burst=3) as c:
        spellings = [
            f"Bearer {GOOD}",
            f"bEaReR {GOOD}",
            f"Bearer  {GOOD}",
            f"BEARER {GOOD} ",
            f"bearer {GOOD}",
        ]
        statuses = [
            (await c.get("/api/v1/users/me", headers={"Authorization": h})).status_code for h in spellings
        ]
    assert statuses == [200, 200, 200, 429, 429]


async def test_random_invalid_keys_from_one_client_are_limited() -> None:
    async with client(rate=1000, burst=2000, fail_rate=0.001, fail_burst=5) as c:
        statuses = []
        for _ in range(8):
            bogus = f"Bearer crm_{uuid.uuid4().hex[:16]}_{uuid.uuid4().hex}"
            statuses.append((await c.get("/api/v1/users/me", headers={"Authorization": bogus})).status_code)
        assert statuses == [401] * 5 + [429] * 3
        # The address is limited whatever it sends now, a valid key included.
        r = await c.get("/api/v1/users/me", headers={"Authorization": f"Bearer {GOOD}"})
        assert r.status_code == 429 and "Retry-After" in r.headers
