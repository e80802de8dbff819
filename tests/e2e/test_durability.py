"""Nothing acknowledged is lost: a hook answered 2xx survives the hub being killed right after."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.hub import Api, HubProcess, eventually
from tests.support.servers import delete_namespace_queues

pytestmark = pytest.mark.e2e


def test_hook_accepted_before_a_crash_is_captured_after_restart(
    rabbit: str, mongo_url: str, tmp_path: Path
) -> None:
    first = HubProcess(rabbit_url=rabbit, mongo_url=mongo_url, data_dir=tmp_path).start()
    try:
        root = Api(first.url, first.root_token)
        admin = root.as_key(root.post("/api/v1/tenants", json={"name": "Crash Co"}).json()["api_key"])
        channel = admin.post("/api/v1/channels", json={"kind": "form", "name": "f", "intake": "auto"}).json()
        # A burst of posts, then SIGKILL right after the last 2xx: some are still in flight
        # (in the broker, or half-way through a consumer) when the process dies.
        with httpx.Client() as client:
            for i in range(20):
                r = client.post(
                    channel["webhook_url"], data={"name": f"Пётр {i}", "phone": f"+7 926 000 11 {i:02d}"}
                )
                assert r.status_code == 200
        first.kill()

        second = first.replica(same_port=True)
        second.start()
        try:
            for i in range(20):
                found = eventually(
                    lambda i=i: admin.get("/api/v1/contacts", params={"phone": f"892600011{i:02d}"}).json()[
                        "items"
                    ],
                    timeout=90,  # a transaction the killed hub left open blocks its records until the server reaps it (60 s)
                )
                assert found[0]["phones"] == [f"+792600011{i:02d}"]
                assert len(found) == 1
        finally:
            second.stop()
    finally:
        first.stop()
        delete_namespace_queues(rabbit, first.namespace)
