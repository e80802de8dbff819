"""Shared fixtures: real RabbitMQ, a real MongoDB-protocol server, the hub as a process."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.localmongo import LocalMongo
from tests.support.servers import (
    claim_namespace,
    delete_dead_test_namespaces,
    delete_namespace_queues,
    mongo_container_url,
    rabbit_url,
)


@pytest.fixture(scope="session")
def rabbit() -> str:
    url = rabbit_url()
    delete_dead_test_namespaces(url)  # what killed runs left behind
    return url


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("CRM_MONGO_URL") or mongo_container_url()
    if url:
        yield url
        return
    server = LocalMongo(":memory:", log_path=tmp_path_factory.mktemp("mongo") / "secantus.log").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def namespace(rabbit: str) -> Iterator[str]:
    ns = f"t{uuid.uuid4().hex[:10]}"
    claim_namespace(rabbit, ns)
    yield ns
    delete_namespace_queues(rabbit, ns)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/<layer>/ get the <layer> marker."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in ("unit", "integration", "e2e"):
            if layer in parts and not item.get_closest_marker(layer):
                item.add_marker(getattr(pytest.mark, layer))
