"""Split mode: every service its own OS process (``crm run gateway``, ``crm run contacts``, ...)
on one broker namespace and one database, with two replicas of the gateway, contacts, connectors
and tasks, as a team deploys it (deploy/README.md).

- every process answers /health, /ready and /metrics of its own;
- hooks of every family (form, telephony, ads, messenger, mail) land once on the right cards
  while one contacts replica and then one connectors replica are killed with SIGKILL mid-stream;
  the gateway tells a provider 503 (never 500) for a hook it could not hand over, and the
  provider's retry lands;
- RPC calls are answered by either contacts replica (each counts what it answered);
- scheduled work runs once, not once per replica: task reminders and overdue notices (claimed
  in the transaction that writes the event), the outbox sweeper (claimed per document), webhook
  retries (claimed per delivery), IMAP polling (a lease per mailbox: each message is handed over
  once). A probe queue bound to the exchanges counts every message published, before any
  consumer could deduplicate.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aio_pika
import httpx
import pytest
from pymongo import MongoClient

from services.connectors.adapters.zadarma import zadarma_signature
from tests.e2e.test_gateway_live import Receiver
from tests.support.dovecot import DovecotServer, append_message, dovecot_server
from tests.support.hub import Api, eventually, touches
from tests.support.split import SplitHub

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FORM_HOOKS = 90


@pytest.fixture(scope="module")
def split(rabbit: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SplitHub]:
    hub = SplitHub(
        rabbit_url=rabbit,
        mongo_url=mongo_url,
        data_dir=tmp_path_factory.mktemp("split"),
        replicas={"gateway": 2, "contacts": 2, "connectors": 2, "tasks": 2},
        env={
            "CRM_WEBHOOK_BACKOFF_S": "0.3",
            "CRM_WEBHOOK_MAX_BACKOFF_S": "1",
            "CRM_WEBHOOK_POLL_S": "0.2",
        },
    )
    with hub.serving():
        yield hub


@pytest.fixture(scope="module")
def mailserver() -> Iterator[DovecotServer]:
    with dovecot_server() as s:
        yield s


def tenant(split: SplitHub) -> Api:
    root = Api(split.url, split.root_token)
    r = root.post("/api/v1/tenants", json={"name": f"Split {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return root.as_key(r.json()["api_key"])


def channel(admin: Api, kind: str, secrets: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "name": f"{kind} split", "intake": "auto", **extra}
    if secrets:
        body["secrets"] = secrets
    r = admin.post("/api/v1/channels", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text answer."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def scrape(split: SplitHub, what: str, index: int) -> str:
    p = split.procs[what][index]
    r = httpx.get(p.url + "/metrics", headers={"Authorization": f"Bearer {split.root_token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.text


def post_retrying(url: str, statuses: list[int], **kw: Any) -> httpx.Response:
    """A provider: a 503 (with Retry-After) is retried, anything else is final."""
    for _ in range(10):
        r = httpx.post(url, timeout=30, **kw)
        statuses.append(r.status_code)
        if r.status_code != 503:
            return r
        assert r.headers.get("retry-after"), r.headers
        time.sleep(0.5)
    return r


# ---- a probe queue on the exchanges ---------------------------------------------------------


class Tap:
    """``<ns>.tap``: bound to some routing keys of the events and internal exchanges; counts
    every message published there (two replicas doing one job twice show up as two messages)."""

    def __init__(self, url: str, namespace: str, keys: dict[str, list[str]]) -> None:
        self.url, self.name = url, f"{namespace}.tap"
        self.exchanges = {"events": f"{namespace}.events", "internal": f"{namespace}.internal"}
        self.messages: list[dict[str, Any]] = []
        asyncio.run(self._declare(keys))

    async def _declare(self, keys: dict[str, list[str]]) -> None:
        conn = await aio_pika.connect(self.url)
        async with conn:
            ch = await conn.channel()
            queue = await ch.declare_queue(self.name, durable=False, arguments={"x-expires": 600_000})
            for exchange, rks in keys.items():
                for rk in rks:
                    await queue.bind(self.exchanges[exchange], routing_key=rk)

    def drain(self) -> list[dict[str, Any]]:
        async def get() -> None:
            conn = await aio_pika.connect(self.url)
            async with conn:
                ch = await conn.channel()
                queue = await ch.declare_queue(self.name, passive=True)
                while (msg := await queue.get(no_ack=True, fail=False)) is not None:
                    self.messages.append(json.loads(msg.body))

        asyncio.run(get())
        return self.messages

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [m for m in self.drain() if m["event_type"] == event_type]


class LiveReader:
    """A live-stream client in a thread that reconnects with ``Last-Event-ID`` after an
    ``overflow`` event or a dropped connection, as a browser's EventSource does."""

    def __init__(self, base_url: str, key: str, types: str) -> None:
        self.base_url, self.key, self.types = base_url, key, types
        self.events: list[dict[str, Any]] = []
        self.overflows = 0
        self.opened = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.opened.wait(15), "stream did not open"

    def _run(self) -> None:
        last: str | None = None
        while not self._stop:
            headers = {"Authorization": f"Bearer {self.key}", **({"Last-Event-ID": last} if last else {})}
            try:
                with httpx.stream(
                    "GET",
                    self.base_url + "/api/v1/events/stream",
                    params={"types": self.types, "heartbeat": 1},
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=5.0),
                ) as resp:
                    fields: dict[str, str] = {}
                    for line in resp.iter_lines():
                        if self._stop:
                            return
                        if line.startswith("retry:"):
                            self.opened.set()
                        elif not line and "data" in fields:
                            if fields.get("event") == "overflow":
                                self.overflows += 1
                                break  # the server ends the stream; resume after the last id
                            self.events.append(json.loads(fields["data"]))
                            last = fields.get("id") or last
                            fields = {}
                        elif line and not line.startswith(":"):
                            name, _, value = line.partition(":")
                            fields[name] = value.removeprefix(" ")
                        elif not line:
                            fields = {}
            except httpx.HTTPError:
                time.sleep(0.5)

    def contact_ids(self) -> set[str]:
        return {e["payload"]["contact_id"] for e in self.events}

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)


# ---- tests ----------------------------------------------------------------------------------


def test_every_process_answers_health_ready_and_metrics(split: SplitHub) -> None:
    for p in split.all():
        assert httpx.get(p.url + "/health").json() == {"status": "ok"}, p.name
        r = httpx.get(p.url + "/ready")
        assert r.status_code == 200 and r.json() == {"ready": True, "missing": []}, (p.name, r.text)
        anonymous = httpx.get(p.url + "/metrics")
        assert anonymous.status_code == 401, p.name
        assert anonymous.headers["content-type"].startswith("application/problem+json")
    text = scrape(split, "contacts", 0)
    for name in ("crm_consumer_queue_messages", "crm_outbox_backlog", "crm_dead_letters"):
        assert re.search(rf"^{name}", text, re.M), name
    assert re.search(rf'crm_consumer_queue_messages{{queue="{split.namespace}.contacts"}}', text)
    assert "crm_hook_accept_seconds" in scrape(split, "connectors", 0)


def test_hooks_of_every_family_land_once_while_replicas_are_killed(
    split: SplitHub, mailserver: DovecotServer, mongo_url: str
) -> None:
    admin = tenant(split)
    other_gateway = split.procs["gateway"][1].url
    tap = Tap(split.rabbit_url, split.namespace, {"internal": ["mail.received.v1"]})

    # mail first, while both connectors replicas run: one of them holds the mailbox's lease
    mailbox = channel(
        admin,
        "imap",
        {"password": mailserver.password},
        config={
            "host": mailserver.host,
            "port": mailserver.port,
            "ssl": "none",
            "username": mailserver.username,
            "address": "sales@corp.example",
            "poll_interval_s": 1,
        },
    )
    for i in range(3):
        raw = (
            f"From: Client {i} <mail{i}@client.example>\r\nTo: sales@corp.example\r\n"
            f"Subject: Request {i}\r\nMessage-ID: <split-{i}-{uuid.uuid4().hex}@client.example>\r\n"
            "Date: Thu, 26 Nov 2026 10:00:00 +0300\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nPrice list, please.\r\n"
        ).encode()
        append_message(mailserver, "INBOX", raw)
    for i in range(3):
        found = eventually(
            lambda i=i: admin.get("/api/v1/contacts", params={"email": f"mail{i}@client.example"}).json()[
                "items"
            ],
            timeout=60,
        )
        assert len(found) == 1
        eventually(lambda c=found[0]: len(touches(admin, c["id"])) == 1, timeout=30)
    time.sleep(3)  # three more polls of each replica
    # every message was fetched and handed over once: one poller polls the mailbox, not one per
    # replica (a second poller would publish each (folder, uid) again)
    fetched = Counter((m["payload"]["folder"], m["payload"]["uid"]) for m in tap.of("mail.received"))
    assert len(fetched) == 3 and set(fetched.values()) == {1}, fetched
    with MongoClient[dict[str, Any]](mongo_url) as client:
        lease = client[f"{split.namespace}_connectors"].imap_leases.find_one({"_id": mailbox["id"]})
    assert lease and lease["owner"]  # held by one of the replicas

    # RPC: both contacts replicas answer the gateways' calls
    for i in range(30):
        base = split.url if i % 2 else other_gateway
        assert httpx.get(base + "/api/v1/contacts", headers=admin.headers()).status_code == 200
    answered = [metric(scrape(split, "contacts", i), "crm_rpc_requests_total") for i in (0, 1)]
    assert all(n > 0 for n in answered), answered

    # the stream: form posts of new people through both gateways; one contacts replica and then
    # one connectors replica die mid-stream; telephony, ads and messenger hooks between them
    form = channel(admin, "form")
    zadarma = channel(admin, "zadarma", {"api_secret": "zd-secret"})
    google = channel(admin, "google_ads", {"key": "g00gle-k3y"})
    telegram = channel(admin, "telegram", {"bot_token": "1:x", "secret_token": "tg-secret-token_1"})
    zd = json.loads((FIXTURES / "telephony" / "zadarma.json").read_text())["notify_end_missed"]
    lead = json.loads((FIXTURES / "forms" / "google_ads_lead.json").read_text())
    update = json.loads((FIXTURES / "telephony" / "telegram.json").read_text())["contact_shared"]
    statuses: list[int] = []
    lock = threading.Lock()
    done = [0]

    def post_form(i: int) -> int:
        url = form["webhook_url"]
        if i % 2:
            url = url.replace(split.url, other_gateway)
        r = post_retrying(url, statuses, data={"name": f"Клиент {i}", "email": f"p{i}@split.example"})
        with lock:
            done[0] += 1
        return r.status_code

    def others() -> list[int]:
        body = urlencode(zd)
        sig = zadarma_signature("zd-secret", zd["event"], zd)
        answers = []
        for _ in range(2):  # every provider redelivers; each lands once
            answers.append(
                post_retrying(
                    zadarma["webhook_url"],
                    statuses,
                    content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded", "Signature": sig},
                ).status_code
            )
            answers.append(post_retrying(google["webhook_url"], statuses, json=lead).status_code)
            answers.append(
                post_retrying(
                    telegram["webhook_url"],
                    statuses,
                    json=update,
                    headers={"X-Telegram-Bot-Api-Secret-Token": "tg-secret-token_1"},
                ).status_code
            )
        return answers

    live = LiveReader(other_gateway, admin.key or "", "contact.created")  # the gateway not posted to first
    with ThreadPoolExecutor(8) as pool:
        forms = [pool.submit(post_form, i) for i in range(FORM_HOOKS)]

        def posted(n: int) -> bool:
            for f in forms:
                if f.done() and f.exception():
                    raise RuntimeError(f"a post failed: {f.exception()!r}")
            return done[0] >= n

        eventually(lambda: posted(FORM_HOOKS // 3), timeout=120, interval=0.02)
        split.procs["contacts"][0].kill()
        extra = pool.submit(others)
        eventually(lambda: posted(2 * FORM_HOOKS // 3), timeout=120, interval=0.02)
        split.procs["connectors"][1].kill()
        answers = [f.result() for f in forms] + extra.result()
    assert set(answers) == {200}, Counter(answers)
    assert not set(statuses) - {200, 503}, Counter(statuses)  # never a 500 for a dead backend

    def people() -> dict[str, list[dict[str, Any]]]:
        by_email: dict[str, list[dict[str, Any]]] = {}
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = admin.get("/api/v1/contacts", params=params).json()
            for c in page["items"]:
                for e in c.get("emails") or [c["id"]]:
                    by_email.setdefault(e, []).append(c)
            cursor = page.get("next_cursor")
            if not cursor:
                return by_email

    expected = {f"p{i}@split.example" for i in range(FORM_HOOKS)}

    def complete() -> dict[str, list[dict[str, Any]]] | None:
        found = people()
        return found if expected <= set(found) else None

    found = eventually(complete, timeout=120, interval=1)
    assert all(len(found[e]) == 1 for e in expected), "a form hook made two contacts"
    for email in sorted(expected):  # answered by the contacts replica that is left
        assert len(touches(admin, found[email][0]["id"])) == 1, email

    def one_touch(**params: str) -> dict[str, Any] | None:
        items = admin.get("/api/v1/contacts", params=params).json()["items"]
        if len(items) != 1:
            return None
        return items[0] if len(touches(admin, items[0]["id"])) == 1 else None

    missed = eventually(lambda: one_touch(phone="+79160001122"), timeout=60)
    assert touches(admin, missed["id"])[0]["data"]["status"] == "missed"
    ad = eventually(lambda: one_touch(email="test@example.com"), timeout=60)
    assert touches(admin, ad["id"])[0]["kind"] == "ad_lead"
    tg = eventually(lambda: one_touch(phone="+79161234567"), timeout=60)
    assert touches(admin, tg["id"])[0]["kind"] == "message"
    time.sleep(2)  # nothing arrives late: no second copy of anything
    everyone = people()
    total = len({c["id"] for cards in everyone.values() for c in cards})
    assert total == FORM_HOOKS + 3 + 3, total

    # the live stream saw every contact created while it was open, none lost (resumes included)
    created_while_open = {found[e][0]["id"] for e in expected} | {missed["id"], ad["id"], tg["id"]}
    try:
        eventually(lambda: created_while_open <= live.contact_ids(), timeout=30)
    finally:
        live.close()
    assert live.contact_ids() == created_while_open


def test_scheduled_work_runs_once_across_replicas(split: SplitHub, mongo_url: str) -> None:
    admin = tenant(split)
    tap = Tap(
        split.rabbit_url,
        split.namespace,
        {"events": ["task.overdue.v1", "task.reminder_due.v1"], "internal": ["probe.swept.v1"]},
    )
    receiver = Receiver(fail_times=1)
    try:
        r = admin.post(
            "/api/v1/subscriptions",
            json={"url": receiver.url, "events": ["task.overdue"], "secret": "split-secret-1"},
        )
        assert r.status_code == 201, r.text
        now = datetime.now(UTC)
        overdue = [
            admin.post(
                "/api/v1/tasks",
                json={
                    "kind": "call",
                    "title": f"Late {i}",
                    "due_at": (now - timedelta(minutes=5)).isoformat(),
                },
            ).json()["id"]
            for i in range(4)
        ]
        reminded = [
            admin.post(
                "/api/v1/tasks",
                json={
                    "kind": "call",
                    "title": f"Soon {i}",
                    "due_at": (now + timedelta(minutes=5)).isoformat(),
                    "remind_before_s": 600,
                },
            ).json()["id"]
            for i in range(4)
        ]
        # outbox documents whose publish never happened (a process died after its commit): every
        # contacts replica's sweeper sees them
        probes = [str(uuid.uuid4()) for _ in range(5)]
        with MongoClient[dict[str, Any]](mongo_url) as client:
            client[f"{split.namespace}_contacts"].outbox.insert_many(
                [
                    {
                        "_id": f"probe-{pid}",
                        "envelopes": [
                            {
                                "event_id": pid,
                                "event_type": "probe.swept",
                                "version": 1,
                                "occurred_at": now.isoformat(),
                                "tenant_id": "probe",
                                "producer": "contacts",
                                "correlation_id": pid,
                                "payload": {},
                            }
                        ],
                        "created_at": now - timedelta(minutes=1),
                        "claimed_until": None,
                    }
                    for pid in probes
                ]
            )

        def settled() -> bool:
            return (
                len(tap.of("task.overdue")) >= 4
                and len(tap.of("task.reminder_due")) >= 4
                and len(tap.of("probe.swept")) >= 5
                and len(receiver.successes()) >= 4
            )

        eventually(settled, timeout=60, interval=0.5)
        time.sleep(5)  # several scheduler (1 s), sweeper (2 s) and webhook (0.2 s) passes of every replica
        by_type = Counter(m["event_type"] for m in tap.drain())
        assert by_type == {"task.overdue": 4, "task.reminder_due": 4, "probe.swept": 5}, by_type
        assert sorted(m["payload"]["task_id"] for m in tap.of("task.overdue")) == sorted(overdue)
        assert sorted(m["payload"]["task_id"] for m in tap.of("task.reminder_due")) == sorted(reminded)
        assert sorted(m["event_id"] for m in tap.of("probe.swept")) == sorted(probes)
        # each delivery: the failed first attempt, one retry that succeeded, nothing more
        attempts = Counter(r["delivery_id"] for r in receiver.requests)
        assert len(attempts) == 4 and set(attempts.values()) == {2}, attempts
    finally:
        receiver.close()
