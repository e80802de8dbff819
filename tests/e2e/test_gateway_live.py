"""Live events (SSE with Last-Event-ID resume) and outbound webhooks through a real hub."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hub import Api, HubProcess, eventually

pytestmark = pytest.mark.e2e


class SseReader:
    """Reads an SSE stream in a thread; parsed events land in ``events`` (a queue)."""

    def __init__(self, api: Api, last_event_id: str | None = None, types: str | None = None) -> None:
        headers = api.headers({"Last-Event-ID": last_event_id} if last_event_id else None)
        params: dict[str, Any] = {"heartbeat": 1}
        if types:
            params["types"] = types
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.opened = threading.Event()
        self.status: int | None = None
        self._client = httpx.Client(base_url=api.base_url, timeout=httpx.Timeout(10.0, read=5.0))
        self._cm = self._client.stream("GET", "/api/v1/events/stream", headers=headers, params=params)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = False
        self._thread.start()
        assert self.opened.wait(10), "stream did not open"

    def _run(self) -> None:
        try:
            with self._cm as resp:
                self.status = resp.status_code
                fields: dict[str, str] = {}
                for line in resp.iter_lines():
                    if line.startswith("retry:"):
                        self.opened.set()
                    if self._stop:
                        return
                    if not line:
                        if "data" in fields:
                            self.events.put({**fields, "data": json.loads(fields["data"])})
                        fields = {}
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value.lstrip(" ")
        except (httpx.HTTPError, RuntimeError, ValueError):
            pass
        finally:
            self.opened.set()

    def until(self, pred: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Everything received up to and including the first event matching ``pred``."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(event)
            if pred(event):
                return seen
        raise AssertionError(f"no matching event in {timeout}s; got {[e['event'] for e in seen]}")

    def drain(self, seconds: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                out.append(self.events.get(timeout=0.1))
            except queue.Empty:
                pass
        return out

    def close(self) -> None:
        self._stop = True
        self._client.close()
        self._thread.join(timeout=5)


def new_tenant(root: Api) -> Api:
    r = root.post("/api/v1/tenants", json={"name": f"Live {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return root.as_key(r.json()["api_key"])


def new_user(admin: Api, role: str, name: str = "U") -> tuple[Api, str]:
    r = admin.post("/api/v1/users", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    return admin.as_key(r.json()["api_key"]), r.json()["user_id"]


def new_contact(api: Api, name: str = "Live Person") -> str:
    r = api.post("/api/v1/contacts", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def contact_created(contact_id: str) -> Any:
    return lambda e: e["event"] == "contact.created" and e["data"]["payload"]["contact_id"] == contact_id


# ---- SSE ------------------------------------------------------------------------------------------


def test_sse_streams_tenant_events_and_resumes_after_last_event_id(admin: Api) -> None:
    stream = SseReader(admin)
    try:
        u1 = new_contact(admin, "First")
        u2 = new_contact(admin, "Second")
        got = stream.until(contact_created(u2))
        e1 = next(e for e in got if contact_created(u1)(e))
        e2 = got[-1]
        assert e2["id"] == e2["data"]["event_id"] and e2["data"]["tenant_id"] == e1["data"]["tenant_id"]
    finally:
        stream.close()

    u3 = new_contact(admin, "While away")
    resumed = SseReader(admin, last_event_id=e2["id"])
    try:
        got = resumed.until(contact_created(u3))
        ids = [e["id"] for e in got]
        assert e1["id"] not in ids and e2["id"] not in ids
    finally:
        resumed.close()


def test_sse_never_shows_another_tenants_events(admin: Api, root: Api) -> None:
    other = new_tenant(root)
    spy = SseReader(other)
    try:
        contact = admin.post("/api/v1/contacts", json={"name": "Hidden"}).json()
        a_user = new_contact(admin, "Also hidden")
        b_user = new_contact(other, "Visible")
        got = spy.until(contact_created(b_user))
        got += spy.drain(0.5)
        text = json.dumps([e["data"] for e in got])
        assert contact["id"] not in text and a_user not in text
        assert {e["data"]["tenant_id"] for e in got} == {got[-1]["data"]["tenant_id"]}
    finally:
        spy.close()


def test_sse_manager_sees_only_own_and_unowned_records_events(admin: Api) -> None:
    manager, manager_id = new_user(admin, "manager", "M1")
    _, other_id = new_user(admin, "manager", "M2")
    stream = SseReader(manager, types="contact.created")
    try:
        theirs = admin.post("/api/v1/contacts", json={"name": "Theirs", "owner_id": other_id}).json()
        unowned = admin.post("/api/v1/contacts", json={"name": "Unowned"}).json()
        mine = manager.post("/api/v1/contacts", json={"name": "Mine"}).json()
        got = stream.until(contact_created(mine["id"]))
        got += stream.drain(0.3)
        contact_ids = {e["data"]["payload"]["contact_id"] for e in got}
        assert unowned["id"] in contact_ids and mine["id"] in contact_ids
        assert theirs["id"] not in contact_ids
        assert {e["event"] for e in got} == {"contact.created"}
        assert manager_id
    finally:
        stream.close()


def test_sse_requires_a_key(hub: HubProcess) -> None:
    r = httpx.get(hub.url + "/api/v1/events/stream")
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


# ---- outbound webhooks ----------------------------------------------------------------------------


class Receiver:
    """A local endpoint: fails the first ``fail_times`` attempts of each delivery, then 200s.
    ``hang`` makes it never answer in time (a dead endpoint)."""

    def __init__(self, fail_times: int = 0, hang: float = 0.0) -> None:
        self.fail_times = fail_times
        self.hang = hang
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                did = self.headers.get("X-CRM-Delivery-Id", "")
                with outer.lock:
                    tries = sum(1 for r in outer.requests if r["delivery_id"] == did)
                    status = 500 if tries < outer.fail_times else 200
                    outer.requests.append(
                        {
                            "delivery_id": did,
                            "signature": self.headers.get("X-CRM-Signature"),
                            "event_type": self.headers.get("X-CRM-Event-Type"),
                            "body": body,
                            "status": status,
                        }
                    )
                if outer.hang:
                    time.sleep(outer.hang)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def successes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hook_hub(rabbit: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub whose webhook back-off is short, so retries happen within a test."""
    proc = HubProcess(
        rabbit_url=rabbit,
        mongo_url=mongo_url,
        data_dir=Path(tmp_path_factory.mktemp("hub-hooks")),
        env={
            "CRM_WEBHOOK_BACKOFF_S": "0.2",
            "CRM_WEBHOOK_MAX_BACKOFF_S": "1",
            "CRM_WEBHOOK_POLL_S": "0.2",
            "CRM_WEBHOOK_TIMEOUT_S": "1.5",
        },
    )
    with proc.serving():
        yield proc


def subscribe(api: Api, url: str, events: list[str], secret: str) -> dict[str, Any]:
    r = api.post("/api/v1/subscriptions", json={"url": url, "events": events, "secret": secret})
    assert r.status_code == 201, r.text
    assert "secret" not in r.json()
    return r.json()


def test_failing_endpoint_gets_exactly_one_successful_signed_delivery_per_event(hook_hub: HubProcess) -> None:
    root = Api(hook_hub.url, hook_hub.root_token)
    a, b = new_tenant(root), new_tenant(root)
    flaky, dead, spy = Receiver(fail_times=3), Receiver(hang=5.0), Receiver()
    try:
        secret = "whsec_" + uuid.uuid4().hex
        sub = subscribe(a, flaky.url, ["contact.created"], secret)
        subscribe(a, dead.url, ["*"], "whsec_dead_endpoint")
        subscribe(b, spy.url, ["*"], "whsec_other_tenant")
        users = [new_contact(a, f"W{i}") for i in range(2)]

        started = time.monotonic()
        eventually(lambda: len(flaky.successes()) >= 2, timeout=20)
        # Three failures and the back-off, yet the dead endpoint (hanging past the timeout on every
        # attempt) did not hold this subscription back.
        assert time.monotonic() - started < 15
        time.sleep(1.0)  # anything duplicated would arrive now

        ok = flaky.successes()
        assert len(ok) == 2
        assert len({r["delivery_id"] for r in ok}) == 2
        for r in ok:
            attempts = [x for x in flaky.requests if x["delivery_id"] == r["delivery_id"]]
            assert [x["status"] for x in attempts] == [500, 500, 500, 200]
            assert {x["body"] for x in attempts} == {r["body"]}
            expected = "sha256=" + hmac.new(secret.encode(), r["body"], hashlib.sha256).hexdigest()
            assert r["signature"] == expected
            payload = json.loads(r["body"])
            assert payload["delivery_id"] == r["delivery_id"] and r["event_type"] == "contact.created"
        assert {json.loads(r["body"])["payload"]["contact_id"] for r in ok} == set(users)

        log = a.get(f"/api/v1/subscriptions/{sub['id']}/deliveries").json()["items"]
        delivered = [d for d in log if d["state"] == "delivered"]
        assert len(delivered) == 2 and all(d["attempts"] == 4 for d in delivered)
        assert [x["status"] for x in delivered[0]["log"]] == [500, 500, 500, 200]
        assert {d["id"] for d in delivered} == {r["delivery_id"] for r in ok}
        # Tenant B's subscription never saw tenant A's events.
        assert all(json.loads(r["body"])["tenant_id"] != payload["tenant_id"] for r in spy.requests)
        assert b.get(f"/api/v1/subscriptions/{sub['id']}/deliveries").status_code == 404
    finally:
        for r in (flaky, dead, spy):
            r.close()


def test_deleted_subscription_gets_nothing_more(hook_hub: HubProcess) -> None:
    root = Api(hook_hub.url, hook_hub.root_token)
    a = new_tenant(root)
    rec = Receiver()
    try:
        sub = subscribe(a, rec.url, ["contact.created"], "whsec_deleted_sub")
        new_contact(a)
        eventually(lambda: len(rec.successes()) == 1, timeout=10)
        assert a.delete(f"/api/v1/subscriptions/{sub['id']}").status_code == 204
        assert a.get(f"/api/v1/subscriptions/{sub['id']}").status_code == 404
        new_contact(a)
        time.sleep(1.0)
        assert len(rec.requests) == 1
    finally:
        rec.close()


def test_a_viewer_and_a_subscription_never_see_internal_events_or_channel_secrets(
    hook_hub: HubProcess,
) -> None:
    """A form hook with its channel token in the query: the viewer's stream and a ``*``
    subscription get the public events it causes, never ``hook.received`` (the raw request with
    its token) nor another hand-off between services."""
    root = Api(hook_hub.url, hook_hub.root_token)
    admin = new_tenant(root)
    viewer, _ = new_user(admin, "viewer", "Watcher")
    token = "tok-" + uuid.uuid4().hex
    channel = admin.post(
        "/api/v1/channels",
        json={"kind": "form", "name": "Site", "intake": "auto", "secrets": {"token": token}},
    ).json()
    rec = Receiver()
    stream = SseReader(viewer)
    try:
        subscribe(admin, rec.url, ["*"], "whsec_" + uuid.uuid4().hex)
        r = httpx.post(
            f"{channel['webhook_url']}?token={token}",
            data={"name": "Секрет Секретов", "phone": "+79165550177", "comment": "private note"},
        )
        assert r.status_code == 200, r.text
        got = stream.until(lambda e: e["event"] == "interaction.recorded")
        got += stream.drain(1.0)
        eventually(
            lambda: any(json.loads(x["body"])["event_type"] == "contact.created" for x in rec.requests)
        )
        delivered = [json.loads(x["body"]) for x in rec.requests]
        types = {e["event"] for e in got} | {d["event_type"] for d in delivered}
        assert "contact.created" in types and "interaction.recorded" in types
        assert not types & {"hook.received", "interaction.captured", "mail.received"}
        assert all(
            t.split(".")[0] in ("contact", "deal", "task", "inbox", "message", "interaction") for t in types
        )
        # the channel token travelled only with the hook; a form's fields reach the viewer only as
        # the timeline item it may read anyway (interaction.recorded), never as a raw request
        leaks = [e for e in [*(e["data"] for e in got), *delivered] if token in json.dumps(e)]
        assert not leaks, leaks
        raw = [e for e in [*(e["data"] for e in got), *delivered] if "body_b64" in json.dumps(e)]
        assert not raw, raw
    finally:
        stream.close()
        rec.close()


def test_a_subscription_to_an_internal_event_type_is_refused(admin: Api) -> None:
    r = admin.post(
        "/api/v1/subscriptions",
        json={"url": "http://example.com/hook", "events": ["hook.received"], "secret": "whsec_12345678"},
    )
    assert r.status_code == 422, r.text
    assert "events" in json.dumps(r.json()["errors"])
