"""A hook answered 2xx survives the hub being killed right after the answer."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hub import Api, HubProcess, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_hub(rabbit: str, mongo_url: str, namespace: str, tmp_path: Path) -> Iterator[HubProcess]:
    hub = HubProcess(rabbit_url=rabbit, mongo_url=mongo_url, data_dir=tmp_path / "hub", namespace=namespace)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.mark.xfail(
    strict=False,
    reason=(
        "intermittent until shared/bus.py retries transient transaction errors past the server's "
        "transaction lifetime (60 s): a transaction orphaned by the SIGKILL write-conflicts the "
        "redelivered event for up to 60 s, the 5 quick redeliveries are spent and it is dead-lettered"
    ),
)
def test_leads_answered_2xx_are_found_after_sigkill_and_restart(own_hub: HubProcess) -> None:
    root = Api(own_hub.url, own_hub.root_token)
    r = root.post("/api/v1/tenants", json={"name": "Durable"})
    assert r.status_code == 201, r.text
    admin = root.as_key(r.json()["api_key"])
    channel = admin.post("/api/v1/channels", json={"kind": "form", "name": "Site", "intake": "auto"}).json()

    phones = [f"+7 916 700 00 {n:02d}" for n in range(5)]
    for n, phone in enumerate(phones):
        r = httpx.post(channel["webhook_url"], data={"name": f"Lead {n}", "phone": phone})
        assert r.status_code == 200, r.text
    own_hub.kill()  # SIGKILL right after the last 2xx: no graceful shutdown, nothing flushed

    own_hub.start()
    admin = Api(own_hub.url, admin.key)

    def by_phone(phone: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = admin.get("/api/v1/contacts", params={"phone": phone}).json()["items"]
        return items

    for n in range(5):
        # With the bus fix a conflicting event waits out the orphan (<= 60 s): raise this to 90 then.
        found = eventually(partial(by_phone, f"+7916700000{n}"), timeout=30)
        assert found[0]["name"] == f"Lead {n}"
    assert admin.get(f"/api/v1/channels/{channel['id']}").json()["health"]["received"] == 5
