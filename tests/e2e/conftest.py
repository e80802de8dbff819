"""The e2e fixtures: one hub process shared by every e2e test, and API clients for it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.hub import Api, HubProcess


@pytest.fixture(scope="package")
def hub(rabbit: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for the e2e tests (they isolate themselves by tenant). It stops once the last e2e
    test is done, so that its pollers and timers do not load the servers the later tests use."""
    proc = HubProcess(rabbit_url=rabbit, mongo_url=mongo_url, data_dir=tmp_path_factory.mktemp("hub"))
    with proc.serving():
        yield proc


@pytest.fixture
def root(hub: HubProcess) -> Api:
    return Api(hub.url, hub.root_token)


@pytest.fixture
def admin(root: Api) -> Api:
    """A fresh tenant's admin for each test."""
    r = root.post("/api/v1/tenants", json={"name": f"Tenant {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return root.as_key(r.json()["api_key"])
