"""The Idempotency middleware on the real MongoDB-protocol server, in front of a small FastAPI app:
a replay re-checks the caller, refusals of the caller are not remembered, over-long keys are a 422."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from gateway.middleware import Idempotency
from shared.clock import SystemClock
from shared.errors import Unauthorized
from shared.mongo import mongo_client

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(mongo_url: str) -> AsyncIterator[Any]:
    client = mongo_client(mongo_url)
    name = f"t{uuid.uuid4().hex[:10]}_gateway"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


def hub(db: Any, valid: set[str]) -> httpx.AsyncClient:
    api = FastAPI()
    made: list[str] = []

    @api.post("/api/v1/things", status_code=201)
    async def create(request: Request) -> Any:
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in valid:
            raise Unauthorized("The API key is not valid.")
        made.append(uuid.uuid4().hex)
        return {"id": made[-1]}

    @api.exception_handler(Unauthorized)
    async def _401(_: Request, exc: Unauthorized) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse(exc.to_problem(), status_code=401)

    async def authenticate(scope: Any) -> None:
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode()
        if authorization.removeprefix("Bearer ") not in valid:
            raise Unauthorized("The API key is not valid.")

    app = Idempotency(api, collection=lambda: db.idempotency, clock=SystemClock(), authenticate=authenticate)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub")


async def test_a_replay_answers_no_revoked_key(db: Any) -> None:
    valid = {"k1"}
    async with hub(db, valid) as c:
        headers = {"Authorization": "Bearer k1", "Idempotency-Key": "idem-1"}
        first = await c.post("/api/v1/things", json={}, headers=headers)
        again = await c.post("/api/v1/things", json={}, headers=headers)
        assert first.status_code == again.status_code == 201 and again.json() == first.json()
        valid.clear()  # revoked
        assert (await c.post("/api/v1/things", json={}, headers=headers)).status_code == 401


async def test_a_401_is_not_remembered_and_a_long_key_is_a_422(db: Any) -> None:
    valid: set[str] = set()
    async with hub(db, valid) as c:
        headers = {"Authorization": "Bearer k2", "Idempotency-Key": "idem-2"}
        assert (await c.post("/api/v1/things", json={}, headers=headers)).status_code == 401
        valid.add("k2")  # e.g. the key was created meanwhile
        r = await c.post("/api/v1/things", json={}, headers=headers)
        assert r.status_code == 201 and r.headers.get("idempotent-replayed") is None
        long = {"Authorization": "Bearer k2", "Idempotency-Key": "x" * 500}
        r = await c.post("/api/v1/things", json={}, headers=long)
        assert r.status_code == 422 and "Idempotency-Key" in r.json()["errors"]
