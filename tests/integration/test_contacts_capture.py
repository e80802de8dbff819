"""The capture handler against the real MongoDB-protocol server: identity resolution, idempotency,
call merging, and proof (by ``explain``) that every read on the capture path uses an index."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient

from services.contacts.handlers.capture import capture
from services.contacts.service import ContactsService
from services.contacts.store import ContactsTx
from shared.bus import Bus, EventPublisher, Topology
from shared.clock import FrozenClock
from shared.crypto import SecretBox
from shared.events import Envelope, InteractionCaptured, SenderData, make_event
from shared.mongo import Store, mongo_client
from shared.service import Runtime
from shared.settings import Settings

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Recording:
    """A database proxy that notes every read filter (collection, filter) passed to find/find_one."""

    def __init__(self, db: Any, seen: list[tuple[str, dict[str, Any], Any]]) -> None:
        self._db = db
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._db, name)
        if name in ("contacts", "timeline", "inbox", "identities", "possible_duplicates"):
            return _RecordingCollection(target, name, self._seen)
        return target

    def __getitem__(self, name: str) -> Any:
        return self._db[name]


class _RecordingCollection:
    def __init__(self, coll: Any, name: str, seen: list[tuple[str, dict[str, Any], Any]]) -> None:
        self._coll, self._name, self._seen = coll, name, seen

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._coll, name)
        if name in ("find", "find_one", "update_one", "update_many", "delete_many"):

            def wrapped(flt: dict[str, Any] | None = None, *args: Any, **kw: Any) -> Any:
                self._seen.append((self._name, dict(flt or {}), kw.get("hint")))
                return attr(flt, *args, **kw)

            return wrapped
        return attr


@pytest.fixture
async def store(mongo_url: str) -> AsyncIterator[Store]:
    client: AsyncMongoClient[dict[str, Any]] = mongo_client(mongo_url)
    st = Store(client, f"it_contacts_{uuid.uuid4().hex[:8]}", producer="contacts", clock=FrozenClock(T0))
    await st.ensure_indexes(ContactsService.indexes)
    try:
        yield st
    finally:
        await client.drop_database(st.db.name)
        await client.close()


def captured(
    tenant: str,
    key: str,
    *,
    phones: list[str] = (),  # type: ignore[assignment]
    emails: list[str] = (),  # type: ignore[assignment]
    name: str | None = None,
    kind: str = "form",
    intake: str = "auto",
    subject: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime = T0,
) -> Envelope:
    payload = InteractionCaptured(
        channel_id="ch1",
        channel_kind="form" if kind == "form" else "asterisk",
        intake=intake,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        direction="in",
        occurred_at=at,
        sender=SenderData(name=name, phones=list(phones), emails=list(emails)),
        summary=f"{kind} {key}",
        data=data or {},
        subject_key=subject,
    )
    return make_event(
        "interaction.captured", tenant_id=tenant, producer="connectors", payload=payload, idempotency_key=key
    )


async def run(store: Store, env: Envelope) -> None:
    ic = InteractionCaptured.model_validate(env.payload)
    await store.consume(env, "contacts.capture", lambda uow: capture(ContactsTx(uow), env, ic))


async def contacts_of(store: Store, tenant: str) -> list[dict[str, Any]]:
    return await store.db.contacts.find({"tenant_id": tenant}).to_list(length=100)


async def test_capture_path_reads_all_use_an_index(store: Store) -> None:
    tenant = "t1"
    # enough unrelated contacts that a collection scan would show as one
    await store.db.contacts.insert_many(
        [
            {
                "_id": f"seed{i:04d}",
                "tenant_id": tenant,
                "state": "active",
                "phones": [f"+7916{i:07d}"],
                "emails": [f"seed{i}@example.ru"],
                "created_at": T0,
            }
            for i in range(300)
        ]
    )
    seen: list[tuple[str, dict[str, Any], Any]] = []
    real_db = store.db
    store.db = Recording(real_db, seen)  # type: ignore[assignment]
    try:
        await run(store, captured(tenant, "a", phones=["+79160000007"], name="Known"))  # known phone
        await run(store, captured(tenant, "b", emails=["seed9@example.ru"]))  # known email
        await run(store, captured(tenant, "c", phones=["+79990000001"], name="New"))  # new sender, auto
        await run(store, captured(tenant, "d", phones=["+79990000002"], intake="inbox"))  # inbox
        await run(store, captured(tenant, "e", phones=["+79990000002"], intake="inbox", subject="call-1"))
        await run(store, captured(tenant, "f", kind="call", subject="call-1", data={"status": "answered"}))
    finally:
        store.db = real_db  # type: ignore[assignment]
    assert {c for c, _, _ in seen} >= {"contacts", "timeline", "inbox", "identities"}
    for coll, flt, hint in seen:
        cmd: dict[str, Any] = {"find": coll, "filter": flt}
        if hint:
            cmd["hint"] = dict(hint)
        plan = await real_db.command("explain", cmd, verbosity="queryPlanner")
        text = repr(plan["queryPlanner"]["winningPlan"])
        assert "COLLSCAN" not in text, f"{coll} {flt} scans the collection: {text}"
        assert "IXSCAN" in text or "IDHACK" in text or "EXPRESS" in text, text


async def test_the_same_event_twice_has_one_effect(store: Store) -> None:
    env = captured("t2", "lead-1", phones=["+79161234567"], name="Иван")
    await run(store, env)
    await run(store, env)
    # the same business fact again under a new event id (a provider retry)
    again = captured("t2", "lead-1", phones=["+79161234567"], name="Иван")
    await store.consume(
        again.model_copy(update={"event_id": "other"}),
        "contacts.capture",
        lambda uow: capture(ContactsTx(uow), again, InteractionCaptured.model_validate(again.payload)),
    )
    contacts = await contacts_of(store, "t2")
    assert len(contacts) == 1
    assert await store.db.timeline.count_documents({"tenant_id": "t2"}) == 1


async def test_several_candidates_pick_the_most_recently_active_and_record_a_possible_duplicate(
    store: Store,
) -> None:
    tenant = "t3"
    base = {"tenant_id": tenant, "state": "active", "created_at": T0 - timedelta(days=9)}
    await store.db.contacts.insert_many(
        [
            {
                **base,
                "_id": "old",
                "phones": ["+79160000001"],
                "emails": [],
                "last_activity_at": T0 - timedelta(days=5),
            },
            {
                **base,
                "_id": "recent",
                "phones": [],
                "emails": ["x@example.ru"],
                "last_activity_at": T0 - timedelta(days=1),
            },
        ]
    )
    await run(store, captured(tenant, "k", phones=["+79160000001"], emails=["x@example.ru"]))
    items = await store.db.timeline.find({"tenant_id": tenant}).to_list(length=10)
    assert [i["contact_id"] for i in items] == ["recent"]
    dup = await store.db.possible_duplicates.find_one({"tenant_id": tenant})
    assert dup is not None and dup["ids"] == ["old", "recent"]


async def test_call_events_of_one_subject_merge_into_one_item_in_any_order(store: Store) -> None:
    tenant = "t4"
    end = captured(
        tenant,
        "call-9:end",
        kind="call",
        phones=["+79165550000"],
        subject="asterisk:call:9",
        data={"status": "answered", "duration_s": 125},
        at=T0 + timedelta(seconds=5),
    )
    ring = captured(
        tenant,
        "call-9:ring",
        kind="call",
        phones=["+79165550000"],
        subject="asterisk:call:9",
        data={"status": "ringing"},
    )
    await run(store, end)
    await run(store, ring)  # arrives late: never undoes the final status
    items = await store.db.timeline.find({"tenant_id": tenant}).to_list(length=10)
    assert len(items) == 1
    assert items[0]["data"] == {"status": "answered", "duration_s": 125}
    assert items[0]["occurred_at"].replace(tzinfo=UTC) == T0
    assert len(await contacts_of(store, tenant)) == 1


async def test_unknown_sender_on_an_inbox_channel_opens_one_item_per_subject(store: Store) -> None:
    tenant = "t5"
    await run(store, captured(tenant, "m1", emails=["who@example.ru"], intake="inbox", subject="s1"))
    await run(store, captured(tenant, "m2", emails=["who@example.ru"], intake="inbox", subject="s1"))
    await run(store, captured(tenant, "m3", emails=["who@example.ru"], intake="inbox"))
    assert await store.db.inbox.count_documents({"tenant_id": tenant, "status": "pending"}) == 2
    assert await contacts_of(store, tenant) == []


async def test_card_reads_and_searches_use_an_index(store: Store) -> None:
    """The contact card (get + first timeline page + next page) and search by phone, email and
    name prefix, as the service runs them."""
    bus = Bus("amqp://guest:guest@127.0.0.1:5672/", Topology("it"))  # never connected
    rt = Runtime(
        settings=Settings(namespace="it"),
        bus=bus,
        topology=Topology("it"),
        mongo=store.client,
        publisher=EventPublisher(bus),
        clock=FrozenClock(T0),
        secrets=SecretBox(Fernet.generate_key()),
    )
    svc = ContactsService(rt)
    svc.store = store
    tenant = "t6"
    await store.db.contacts.insert_many(
        [
            {
                "_id": f"c{i:04d}",
                "tenant_id": tenant,
                "state": "active",
                "name": f"Имя{i} Фамилия",
                "phones": [f"+7916{i:07d}"],
                "emails": [f"p{i}@example.ru"],
                "search": [f"имя{i}", "фамилия", f"7916{i:07d}", f"p{i}@example.ru"],
                "owner_id": None,
                "created_at": T0,
            }
            for i in range(300)
        ]
    )
    await store.db.timeline.insert_many(
        [
            {
                "_id": f"i{i:04d}",
                "tenant_id": tenant,
                "contact_id": f"c{i % 10:04d}",
                "kind": "note",
                "direction": "out",
                "occurred_at": T0 - timedelta(minutes=i),
                "subject_key": f"s{i}",
            }
            for i in range(300)
        ]
    )
    ctx = {"tenant_id": tenant, "user_id": "u1", "role": "manager", "settings": {"default_region": "RU"}}
    seen: list[tuple[str, dict[str, Any], Any]] = []
    real_db = store.db
    store.db = Recording(real_db, seen)  # type: ignore[assignment]
    try:

        async def call(method: str, **args: Any) -> Any:
            reply = await svc.rpc.dispatch({"method": method, "ctx": ctx, "args": args})
            assert reply["ok"], reply
            return reply["result"]

        assert (await call("get_contact", contact_id="c0003"))["id"] == "c0003"
        first = await call("timeline", contact_id="c0003", limit=10)
        second = await call("timeline", contact_id="c0003", limit=10, cursor=first["next_cursor"])
        assert len(first["items"]) == 10 and len(second["items"]) == 10
        assert first["items"][-1]["occurred_at"] > second["items"][0]["occurred_at"]
        by_phone = await call("list_contacts", filters={"phone": "8 916 000-00-42"})
        by_email = await call("list_contacts", filters={"email": "P42@Example.RU"})
        by_name = await call("list_contacts", filters={"q": "ИМЯ42"})
        assert [c["id"] for c in by_phone["items"]] == [c["id"] for c in by_email["items"]] == ["c0042"]
        assert [c["id"] for c in by_name["items"]] == ["c0042"]
    finally:
        store.db = real_db  # type: ignore[assignment]
    assert {c for c, _, _ in seen} >= {"contacts", "timeline"}
    for coll, flt, _ in seen:
        plan = await real_db.command("explain", {"find": coll, "filter": flt}, verbosity="queryPlanner")
        text = repr(plan["queryPlanner"]["winningPlan"])
        assert "COLLSCAN" not in text, f"{coll} {flt} scans the collection: {text}"


async def test_rule_assigns_the_contact_owner_once(store: Store) -> None:
    bus = Bus("amqp://guest:guest@127.0.0.1:5672/", Topology("it"))  # never connected: no publisher
    rt = Runtime(
        settings=Settings(namespace="it"),
        bus=bus,
        topology=Topology("it"),
        mongo=store.client,
        publisher=EventPublisher(bus),
        clock=FrozenClock(T0),
        secrets=SecretBox(Fernet.generate_key()),
    )
    svc = ContactsService(rt)
    svc.store = store
    await run(store, captured("t7", "k1", phones=["+79160000001"]))
    (contact,) = await contacts_of(store, "t7")
    command = make_event(
        "rule.assign_owner_requested",
        tenant_id="t7",
        producer="tasks",
        payload={
            "contact_id": contact["_id"],
            "user_id": "u-9",
            "caused_by_rule": "r1",
            "action_key": "rule:r1:e:0",
        },
    )
    handle = svc.events.handlers["rule.assign_owner_requested.v1"]
    await handle(command)
    await handle(command)
    (contact,) = await contacts_of(store, "t7")
    assert contact["owner_id"] == "u-9"
    events = [e for d in await store.db.outbox.find({}).to_list(None) for e in d["envelopes"]]
    updated = [e for e in events if e["event_type"] == "contact.updated"]
    assert len(updated) == 1 and updated[0]["payload"]["caused_by_rule"] == "r1"


async def test_an_answer_sent_from_a_card_is_filed_on_that_card(store: Store) -> None:
    """``contact_id`` (set by conversations on our answers) wins over identity matching while the
    contact is active; otherwise the answer is filed like any touch (and never makes a contact
    out of thin air when it names nobody)."""
    tenant = "t-answer"
    await run(store, captured(tenant, "first", phones=["+79161110000"], name="Анна"))
    (anna,) = await contacts_of(store, tenant)
    env = make_event(
        "interaction.captured",
        tenant_id=tenant,
        producer="connectors",
        idempotency_key="telegram:out:1",
        payload=InteractionCaptured(
            channel_id="ch1",
            channel_kind="avito",
            intake="auto",
            kind="message",
            direction="out",
            occurred_at=T0,
            sender=SenderData(),  # Avito: no identity of the customer on the thread's address
            summary="Ответ",
            contact_id=anna["_id"],
        ),
    )
    await run(store, env)
    await run(store, env)
    items = await store.db.timeline.find({"tenant_id": tenant, "kind": "message"}).to_list(None)
    assert [(i["contact_id"], i["direction"]) for i in items] == [(anna["_id"], "out")]
    assert len(await contacts_of(store, tenant)) == 1
