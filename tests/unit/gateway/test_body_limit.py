"""A chunked body (no Content-Length) over the limit is a 413, even when the route would have
answered the failed read with a 400. A real FastAPI app over httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from shared.asgi import BodyLimit


class Thing(BaseModel):
    name: str


def app() -> BodyLimit:
    api = FastAPI()

    @api.post("/api/v1/things")
    async def create(thing: Thing) -> dict[str, str]:
        return {"name": thing.name[:10]}

    return BodyLimit(api, max_body=1024 * 1024)


async def chunks(total: int) -> AsyncIterator[bytes]:
    yield b'{"name": "'
    for _ in range(total // 65536):
        yield b"x" * 65536
    yield b'"}'


async def test_a_chunked_body_over_the_limit_is_a_413() -> None:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        r = await client.post(
            "/api/v1/things", content=chunks(2_621_440), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
        ok = await client.post(
            "/api/v1/things", content=chunks(65536), headers={"Content-Type": "application/json"}
        )
        assert ok.status_code == 200
