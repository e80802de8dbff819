"""The customer card through the gateway: one person from many doors, merge, custom fields, search,
GDPR erasure and export, CSV import/export, deal and task events on the timeline."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from shared.bus import Bus, Topology
from shared.events import make_event
from tests.support.hub import Api, HubProcess, eventually

pytestmark = pytest.mark.e2e


def channel(admin: Api, kind: str = "form", intake: str = "auto", **extra: Any) -> dict[str, Any]:
    r = admin.post(
        "/api/v1/channels",
        json={"kind": kind, "name": f"{kind} {uuid.uuid4().hex[:4]}", "intake": intake, **extra},
    )
    assert r.status_code == 201, r.text
    return r.json()


def by_phone(admin: Api, phone: str) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/contacts", params={"phone": phone})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def timeline(admin: Api, contact_id: str, *, touches_only: bool = True) -> list[dict[str, Any]]:
    """The contact's timeline; by default only the touches, without the tasks and deal events that
    automation rules and deals add beside them."""
    r = admin.get(f"/api/v1/contacts/{contact_id}/timeline")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return [i for i in items if i["kind"] not in ("task", "deal")] if touches_only else items


def form_contact(admin: Api, **fields: str) -> dict[str, Any]:
    ch = channel(admin)
    assert httpx.post(ch["webhook_url"], data=fields).status_code == 200
    key = fields.get("phone") or fields["email"]
    param = "phone" if "phone" in fields else "email"
    return eventually(lambda: admin.get("/api/v1/contacts", params={param: key}).json()["items"])[0]


def test_same_person_by_form_call_and_email_is_one_contact_with_three_items(admin: Api) -> None:
    site = channel(admin)
    pbx = channel(admin, kind="asterisk")
    mail = channel(admin)  # stands in for mail until the IMAP channel exists: it carries only an email

    r = httpx.post(
        site["webhook_url"],
        data={"name": "Иван Петров", "phone": "8 (916) 555-12-34", "email": "Ivan.Petrov@Example.RU"},
    )
    assert r.status_code == 200, r.text
    contact = eventually(lambda: by_phone(admin, "+79165551234"))[0]

    cdr = {
        "uniqueid": "1795874590.18",
        "linkedid": "1795874590.18",
        "src": "79165551234",
        "dst": "101",
        "did": "74951234567",
        "clid": '"" <79165551234>',
        "start": "2026-11-27 17:03:10",
        "answer": "2026-11-27 17:03:17",
        "end": "2026-11-27 17:05:22",
        "duration": "132",
        "billsec": "125",
        "disposition": "ANSWERED",
    }
    r = httpx.post(pbx["webhook_url"], content=json.dumps(cdr), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    eventually(lambda: len(timeline(admin, contact["id"])) == 2)

    r = httpx.post(mail["webhook_url"], data={"email": "IVAN.PETROV@example.ru", "message": "Пришлите счёт"})
    assert r.status_code == 200, r.text
    items = eventually(lambda: (t := timeline(admin, contact["id"])) and len(t) == 3 and t)

    assert sorted(i["kind"] for i in items) == ["call", "form", "form"]
    assert {i["channel_id"] for i in items} == {site["id"], pbx["id"], mail["id"]}
    call = next(i for i in items if i["kind"] == "call")
    assert call["data"]["status"] == "answered"
    stamps = [i["occurred_at"] for i in items]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    # one contact, found by the phone in a third spelling and by the email in another case
    assert [c["id"] for c in by_phone(admin, "+7 (916) 555 12 34")] == [contact["id"]]
    found = admin.get("/api/v1/contacts", params={"email": "ivan.petrov@EXAMPLE.ru"}).json()["items"]
    assert [c["id"] for c in found] == [contact["id"]]
    assert len(admin.get("/api/v1/contacts").json()["items"]) == 1


def test_search_by_name_prefix_in_any_case_and_script(admin: Api) -> None:
    ru = admin.post("/api/v1/contacts", json={"name": "Пётр Иванов", "phones": ["+79031234567"]}).json()
    en = admin.post(
        "/api/v1/contacts", json={"name": "Peter Smith", "emails": ["p.smith@example.com"]}
    ).json()

    def ids(**params: str) -> list[str]:
        r = admin.get("/api/v1/contacts", params=params)
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["items"]]

    assert ids(q="ИВАН") == [ru["id"]]
    assert ids(q="петр") == [ru["id"]]  # ё written as е
    assert ids(q="пётр ив") == [ru["id"]]
    assert ids(q="SMI") == [en["id"]]
    assert ids(q="8903123") == [ru["id"]]
    assert ids(q="p.smith@") == [en["id"]]
    assert ids(phone="8 903 123-45-67") == [ru["id"]]
    assert ids(q="zzz") == []


def test_manual_note_and_logged_call_show_on_the_timeline(admin: Api) -> None:
    c = admin.post("/api/v1/contacts", json={"name": "Олег"}).json()
    r = admin.post(f"/api/v1/contacts/{c['id']}/interactions", json={"kind": "note", "summary": "VIP"})
    assert r.status_code == 201, r.text
    r = admin.post(
        f"/api/v1/contacts/{c['id']}/interactions",
        json={
            "kind": "call",
            "direction": "in",
            "occurred_at": "2020-01-01T10:00:00+00:00",
            "summary": "Звонил",
        },
    )
    assert r.status_code == 201, r.text
    items = timeline(admin, c["id"])
    assert [(i["kind"], i["summary"]) for i in items] == [("note", "VIP"), ("call", "Звонил")]
    assert items[1]["direction"] == "in"
    bad = admin.post(f"/api/v1/contacts/{c['id']}/interactions", json={"kind": "sms", "summary": "x"})
    assert bad.status_code == 422


def test_timeline_pages_with_a_cursor_newest_first(admin: Api) -> None:
    c = admin.post("/api/v1/contacts", json={"name": "Pager"}).json()
    for n in range(5):
        r = admin.post(
            f"/api/v1/contacts/{c['id']}/interactions",
            json={"kind": "note", "summary": f"n{n}", "occurred_at": f"2026-01-0{n + 1}T00:00:00+00:00"},
        )
        assert r.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = admin.get(f"/api/v1/contacts/{c['id']}/timeline", params=params).json()
        seen += [i["summary"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == ["n4", "n3", "n2", "n1", "n0"]


def test_merge_keeps_both_histories_and_the_old_id_resolves(admin: Api) -> None:
    a = form_contact(admin, name="Анна Сидорова", phone="+79160000001")
    b = form_contact(admin, name="анна  сидорова", email="anna@example.ru")
    admin.post(f"/api/v1/contacts/{b['id']}/interactions", json={"kind": "note", "summary": "from b"})
    eventually(lambda: len(timeline(admin, a["id"])) == 1 and len(timeline(admin, b["id"])) == 2)

    dups = admin.get(f"/api/v1/contacts/{a['id']}/duplicates").json()["items"]
    assert [(d["id"], d["reasons"]) for d in dups] == [(b["id"], ["name"])]

    r = admin.post(f"/api/v1/contacts/{a['id']}/merge", json={"other_id": b["id"]})
    assert r.status_code == 200, r.text
    merged = r.json()
    assert merged["id"] == a["id"]
    assert merged["phones"] == ["+79160000001"] and merged["emails"] == ["anna@example.ru"]

    items = timeline(admin, a["id"])
    assert len(items) == 3 and "from b" in [i["summary"] for i in items]
    old = admin.get(f"/api/v1/contacts/{b['id']}")
    assert old.status_code == 200
    assert old.json()["id"] == a["id"] and old.json()["merged_into"] == a["id"]
    assert len(timeline(admin, b["id"])) == 3  # the old id shows the survivor's history
    listed = [c["id"] for c in admin.get("/api/v1/contacts").json()["items"]]
    assert listed == [a["id"]]
    # the merged email now resolves to the survivor on capture
    mail = channel(admin)
    httpx.post(mail["webhook_url"], data={"email": "ANNA@example.ru", "message": "hi"})
    eventually(lambda: len(timeline(admin, a["id"])) == 4)
    assert admin.post(f"/api/v1/contacts/{a['id']}/merge", json={"other_id": a["id"]}).status_code == 422


def test_custom_field_values_are_validated_and_a_wrong_one_is_never_stored(admin: Api) -> None:
    fields = [
        {
            "entity": "contact",
            "key": "segment",
            "label": "Сегмент",
            "type": "enum",
            "options": ["B2B", "B2C"],
        },
        {"entity": "contact", "key": "budget", "label": "Бюджет", "type": "number"},
        {"entity": "contact", "key": "birthday", "label": "ДР", "type": "date"},
        {"entity": "contact", "key": "site", "label": "Сайт", "type": "url"},
        {"entity": "contact", "key": "alt_phone", "label": "Доп. телефон", "type": "phone"},
        {"entity": "deal", "key": "segment", "label": "Deal segment", "type": "string", "required": True},
    ]
    for f in fields:
        r = admin.post("/api/v1/custom-fields", json=f)
        assert r.status_code == 201, r.text
    assert admin.post("/api/v1/custom-fields", json=fields[0]).status_code == 409
    bad_def = admin.post("/api/v1/custom-fields", json={**fields[0], "key": "x2", "options": []})
    assert bad_def.status_code == 422 and "options" in bad_def.json()["errors"]
    listed = admin.get("/api/v1/custom-fields", params={"entity": "contact"}).json()["items"]
    assert sorted(f["key"] for f in listed) == ["alt_phone", "birthday", "budget", "segment", "site"]

    r = admin.post(
        "/api/v1/contacts",
        json={"name": "Bad", "phones": ["+79035550001"], "custom": {"segment": "B2X", "budget": "lots"}},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert set(r.json()["errors"]) == {"custom.segment", "custom.budget"}
    assert by_phone(admin, "+79035550001") == []
    r = admin.post("/api/v1/contacts", json={"name": "Unknown", "custom": {"colour": "red"}})
    assert r.status_code == 422 and "custom.colour" in r.json()["errors"]

    r = admin.post(
        "/api/v1/contacts",
        json={
            "name": "Good",
            "custom": {
                "segment": "B2B",
                "budget": "1500,5",
                "birthday": "1990-05-01",
                "alt_phone": "8 916 000 11 22",
            },
        },
    )
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["custom"] == {
        "segment": "B2B",
        "budget": 1500.5,
        "birthday": "1990-05-01",
        "alt_phone": "+79160001122",
    }
    r = admin.patch(f"/api/v1/contacts/{c['id']}", json={"custom": {"site": "not a url"}})
    assert r.status_code == 422 and list(r.json()["errors"]) == ["custom.site"]
    assert admin.get(f"/api/v1/contacts/{c['id']}").json()["custom"] == c["custom"]
    r = admin.patch(f"/api/v1/contacts/{c['id']}", json={"custom": {"site": "https://ex.ru", "budget": None}})
    assert r.status_code == 200, r.text
    assert r.json()["custom"] == {
        **{k: v for k, v in c["custom"].items() if k != "budget"},
        "site": "https://ex.ru",
    }


def test_companies_and_contact_company_link(admin: Api) -> None:
    r = admin.post("/api/v1/companies", json={"name": "ООО Ромашка", "domain": "Romashka.RU"})
    assert r.status_code == 201, r.text
    co = r.json()
    assert co["domain"] == "romashka.ru"
    assert admin.patch(f"/api/v1/companies/{co['id']}", json={"tags": ["vip"]}).json()["tags"] == ["vip"]
    assert admin.get(f"/api/v1/companies/{co['id']}").json()["name"] == "ООО Ромашка"
    assert [x["id"] for x in admin.get("/api/v1/companies", params={"q": "ромаш"}).json()["items"]] == [
        co["id"]
    ]
    c = admin.post("/api/v1/contacts", json={"name": "Сотрудник", "company_id": co["id"]})
    assert c.status_code == 201 and c.json()["company_id"] == co["id"]
    bad = admin.post("/api/v1/contacts", json={"name": "X", "company_id": "nope"})
    assert bad.status_code == 422 and "company_id" in bad.json()["errors"]
    listed = admin.get("/api/v1/contacts", params={"company_id": co["id"]}).json()["items"]
    assert [x["id"] for x in listed] == [c.json()["id"]]


def _all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_all_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _all_strings(v)]
    return []


def test_erase_leaves_no_personal_data_in_any_services_database(
    admin: Api, hub: HubProcess, mongo_url: str
) -> None:
    inbox = channel(admin, intake="inbox")
    pbx = channel(admin, kind="asterisk")
    c = form_contact(
        admin, name="Мария Эрейзова", phone="+79167770011", email="maria.erase@example.ru", comment="секрет"
    )
    other = form_contact(admin, name="Мария Эрейзова", email="maria.second@example.ru")
    assert admin.post(f"/api/v1/contacts/{c['id']}/merge", json={"other_id": other["id"]}).status_code == 200
    admin.post(
        f"/api/v1/contacts/{c['id']}/interactions", json={"kind": "note", "summary": "любит Эрейзова-чай"}
    )
    httpx.post(inbox["webhook_url"], data={"name": "Мария Эрейзова", "phone": "+79167770011"})
    cdr = {
        "uniqueid": "1795874999.7",
        "src": "89167770011",
        "dst": "101",
        "clid": '"Мария Эрейзова" <89167770011>',
        "start": "2026-11-27 17:03:10",
        "end": "2026-11-27 17:04:10",
        "duration": "60",
        "billsec": "0",
        "disposition": "NO ANSWER",
    }
    r = httpx.post(pbx["webhook_url"], content=json.dumps(cdr), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    # the same phone matches the contact, so it lands on the card; an inbox item of another sender stays
    eventually(lambda: len(timeline(admin, c["id"])) == 5)

    export = admin.get(f"/api/v1/contacts/{c['id']}/export")
    assert export.status_code == 200, export.text
    body = export.json()
    assert body["contacts"]["contact"]["name"] == "Мария Эрейзова"
    assert len([i for i in body["contacts"]["timeline"] if i["kind"] not in ("task", "deal")]) == 5
    assert set(body) >= {"deals", "tasks", "errors"}

    r = admin.post(f"/api/v1/contacts/{c['id']}/erase")
    assert r.status_code == 200, r.text
    assert admin.get(f"/api/v1/contacts/{c['id']}").status_code == 410
    assert admin.get(f"/api/v1/contacts/{other['id']}").status_code == 410
    assert admin.get(f"/api/v1/contacts/{c['id']}/timeline").status_code == 410
    assert by_phone(admin, "+79167770011") == []
    assert admin.get("/api/v1/contacts", params={"q": "мария"}).json()["items"] == []

    secrets = ["Эрейзова", "эрейзова", "79167770011", "9167770011", "maria.erase", "maria.second", "секрет"]
    client: MongoClient = MongoClient(mongo_url)
    db = client[f"{hub.namespace}_contacts"]
    tenant_id = db.contacts.find_one({"_id": c["id"]})["tenant_id"]

    def leaks() -> list[str]:
        found = []
        for service in ("contacts", "deals", "tasks", "analytics", "connectors", "gateway"):
            sdb = client[f"{hub.namespace}_{service}"]
            for coll in sdb.list_collection_names():
                for doc in sdb[coll].find({"tenant_id": tenant_id}):
                    text = " ".join(_all_strings(doc))
                    found += [f"{service}.{coll}: {s}" for s in secrets if s in text]
        return found

    try:
        # each service forgets on its own once it has the contact.erased event
        try:
            eventually(lambda: not leaks())
        except AssertionError:
            pytest.fail(f"personal data left after the erase: {leaks()}")
        # counts stay: the timeline items remain, without content
        left = [i for i in db.timeline.find({"contact_id": c["id"]}) if i["kind"] not in ("task", "deal")]
        assert len(left) == 5 and all(not i["summary"] and not i["data"] for i in left)
    finally:
        client.close()
    # a new touch from the same phone starts a new, unrelated contact
    site = channel(admin)
    httpx.post(site["webhook_url"], data={"phone": "+79167770011", "comment": "again"})
    again = eventually(lambda: by_phone(admin, "+79167770011"))
    assert again[0]["id"] != c["id"]


def test_erase_is_for_admins_and_viewers_cannot_change_contacts(admin: Api) -> None:
    key = admin.post(
        "/api/v1/users", json={"name": "V", "email": f"v{uuid.uuid4().hex[:6]}@example.com", "role": "viewer"}
    ).json()["api_key"]
    viewer = admin.as_key(key)
    c = admin.post("/api/v1/contacts", json={"name": "Z"}).json()
    assert viewer.post(f"/api/v1/contacts/{c['id']}/erase").status_code == 403
    assert (
        viewer.post(
            f"/api/v1/contacts/{c['id']}/interactions", json={"kind": "note", "summary": "x"}
        ).status_code
        == 403
    )
    assert viewer.post(f"/api/v1/contacts/{c['id']}/merge", json={"other_id": "x"}).status_code == 403


def test_csv_import_dedups_reports_bad_lines_and_export_streams_back(admin: Api) -> None:
    existing = admin.post("/api/v1/contacts", json={"name": "Старый", "phones": ["+79160001111"]}).json()
    text = (
        "Name,Phone,Email,Tags,Comment\r\n"
        "Новый Клиент,8 916 000-22-22,new@example.ru,vip;import,\r\n"
        "Старый Клиент,+7 916 000 11 11,old@example.ru,,\r\n"
        ",not a phone,,,\r\n"
        '"Многострочный ""Клиент""",,multi@example.ru,,"строка 1\r\nстрока 2"\r\n'
        "Дубль,,NEW@example.ru,,\r\n"
        ",,,,\r\n"
        "Без контактов,,bad@,,\r\n"
    )
    r = admin.post("/api/v1/contacts/import", content=text.encode(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["imported"] == 2  # Новый, Многострочный
    assert result["updated"] == 2  # Старый by phone, Дубль by email (of a row just imported)
    assert [f["line"] for f in result["failed"]] == [4, 9]  # the quoted line break spans lines 5-6
    assert "phone" in result["failed"][0]["reason"]
    assert admin.get(f"/api/v1/contacts/{existing['id']}").json()["emails"] == ["old@example.ru"]
    new = admin.get("/api/v1/contacts", params={"email": "new@example.ru"}).json()["items"]
    assert len(new) == 1 and new[0]["phones"] == ["+79160002222"] and new[0]["tags"] == ["import", "vip"]
    assert new[0]["source"]["kind"] == "import"

    r = admin.get("/api/v1/contacts/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert {row["name"] for row in rows} == {"Старый", "Новый Клиент", 'Многострочный "Клиент"'}
    assert next(row for row in rows if row["id"] == existing["id"])["phones"] == "+79160001111"

    r = admin.post(
        "/api/v1/contacts/import", content=b"foo,bar\r\n1,2\r\n", headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 422 and "header" in r.json()["errors"]


def test_csv_import_reads_windows_1251(admin: Api) -> None:
    text = "name;phone\r\n".replace(";", ",") + "Ёжиков Иван,+79165550999\r\n"
    r = admin.post(
        "/api/v1/contacts/import", content=text.encode("cp1251"), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 1
    assert by_phone(admin, "+79165550999")[0]["name"] == "Ёжиков Иван"


def _publish(hub: HubProcess, rabbit: str, tenant_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    async def go() -> None:
        bus = Bus(rabbit, Topology(hub.namespace))
        await bus.connect()
        try:
            for event_type, payload in events:
                await bus.publish(
                    make_event(event_type, tenant_id=tenant_id, producer="test", payload=payload)
                )
        finally:
            await bus.close()

    asyncio.run(go())


def test_deal_and_task_events_show_on_the_contact_timeline(root: Api, hub: HubProcess, rabbit: str) -> None:
    made = root.post("/api/v1/tenants", json={"name": "Events"}).json()
    admin, tenant = root.as_key(made["api_key"]), made["tenant_id"]
    c = admin.post("/api/v1/contacts", json={"name": "Deal Person"}).json()
    now = datetime.now(UTC).isoformat()
    deal = {"deal_id": "d1", "pipeline_id": "p1", "stage_id": "s1", "amount": "100.00", "currency": "RUB"}
    task = {"title": "Перезвонить", "kind": "call", "due_at": now, "status": "open"}
    _publish(
        hub,
        rabbit,
        tenant,
        [
            ("deal.created", {**deal, "contact_id": c["id"], "status": "open", "occurred_at": now}),
            ("deal.won", {**deal, "contact_id": c["id"], "status": "won", "occurred_at": now}),
            ("task.created", {**task, "task_id": "t1", "contact_id": c["id"]}),
            ("task.completed", {**task, "task_id": "t1", "contact_id": c["id"], "status": "done"}),
            ("task.created", {**task, "task_id": "t2", "contact_id": None, "title": "No contact"}),
        ],
    )
    items = eventually(lambda: (t := timeline(admin, c["id"], touches_only=False)) and len(t) == 4 and t)
    assert sorted(i["kind"] for i in items) == ["deal", "deal", "task", "task"]
    assert {i["data"]["event"] for i in items} == {"created", "won", "completed"}
    assert any(i["summary"] == "Task created: Перезвонить" for i in items)


def test_several_matching_contacts_take_the_touch_on_the_most_recent_and_show_as_duplicates(
    admin: Api,
) -> None:
    older = admin.post("/api/v1/contacts", json={"name": "Первый", "phones": ["+79165557788"]}).json()
    newer = admin.post("/api/v1/contacts", json={"name": "Второй", "emails": ["both@example.ru"]}).json()
    site = channel(admin)
    httpx.post(site["webhook_url"], data={"phone": "89165557788", "email": "Both@Example.ru"})
    eventually(lambda: len(timeline(admin, newer["id"])) == 1)
    assert timeline(admin, older["id"]) == []
    dups = admin.get(f"/api/v1/contacts/{older['id']}/duplicates").json()["items"]
    assert [(d["id"], d["reasons"]) for d in dups] == [(newer["id"], ["captured"])]
    same_phone = admin.post(
        "/api/v1/contacts", json={"name": "Третий", "phones": ["+7 916 555 77 88"]}
    ).json()
    dups = admin.get(f"/api/v1/contacts/{older['id']}/duplicates").json()["items"]
    assert {d["id"]: d["reasons"] for d in dups} == {newer["id"]: ["captured"], same_phone["id"]: ["phone"]}


def test_csv_import_spanning_several_batches_keeps_line_numbers(admin: Api) -> None:
    rows = ["name,phone"] + [f"Клиент {n},+7 917 {n:03d}-00-00" for n in range(420)]
    rows[300] = "Плохой,12"  # line 301
    r = admin.post(
        "/api/v1/contacts/import", content="\n".join(rows).encode(), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "imported": 419,
        "updated": 0,
        "failed": [{"line": 301, "reason": "phone: is not a phone number"}],
    }
    assert by_phone(admin, "+79174190000")[0]["name"] == "Клиент 419"


def test_csv_import_larger_than_the_api_body_limit_is_streamed(admin: Api) -> None:
    """The import has its own body limit: a CSV over the 1 MiB API limit goes through."""
    padding = "x" * 4000
    lines = ["name,phone,email,note"]
    lines += [f"Клиент {i},+7 917 300 {i // 100:02d} {i % 100:02d},,{padding}" for i in range(300)]
    lines.append("Broken row,not a phone,not an email,")
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) > 1024 * 1024
    r = admin.post("/api/v1/contacts/import", content=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["imported"] == 300
    assert [f["line"] for f in out["failed"]] == [302]
    assert by_phone(admin, "+79173000299")[0]["name"] == "Клиент 299"


def test_csv_import_with_an_idempotency_key_runs_once(admin: Api) -> None:
    """The streamed import honours Idempotency-Key like every POST, without buffering the body:
    the same body again gets the first answer (the second run would have reported `updated`),
    another body under the same key a 422."""
    padding = "y" * 4000
    lines = ["name,phone,note"] + [
        f"Повтор {i},+7 918 400 {i // 100:02d} {i % 100:02d},{padding}" for i in range(300)
    ]
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) > 1024 * 1024  # over the API limit: this really is the streamed path
    headers = {"Content-Type": "text/csv", "Idempotency-Key": uuid.uuid4().hex}
    first = admin.post("/api/v1/contacts/import", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["imported"] == 300 and first.json()["updated"] == 0
    again = admin.post("/api/v1/contacts/import", content=body, headers=headers)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    other = admin.post(
        "/api/v1/contacts/import", content=body + "Ещё,+79184009999,\n".encode(), headers=headers
    )
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["errors"]
    assert by_phone(admin, "+79184009999") == []
    # without the key the same file runs again: the people exist, so it updates them
    plain = admin.post("/api/v1/contacts/import", content=body, headers={"Content-Type": "text/csv"})
    assert plain.json()["imported"] == 0 and plain.json()["updated"] == 300


def test_companies_have_their_own_validated_custom_fields(admin: Api) -> None:
    for f in (
        {"entity": "company", "key": "inn", "label": "ИНН", "type": "string", "required": True},
        {"entity": "company", "key": "size", "label": "Размер", "type": "enum", "options": ["S", "M", "L"]},
        {"entity": "contact", "key": "size", "label": "Размер одежды", "type": "string"},
    ):
        assert admin.post("/api/v1/custom-fields", json=f).status_code == 201
    keys = [
        f["key"] for f in admin.get("/api/v1/custom-fields", params={"entity": "company"}).json()["items"]
    ]
    assert sorted(keys) == ["inn", "size"]

    r = admin.post("/api/v1/companies", json={"name": "ООО Ромашка", "custom": {"size": "XL"}})
    assert r.status_code == 422, r.text
    assert set(r.json()["errors"]) == {"custom.size", "custom.inn"}  # wrong option; required field missing
    assert admin.get("/api/v1/companies", params={"q": "ромашка"}).json()["items"] == []

    r = admin.post(
        "/api/v1/companies", json={"name": "ООО Ромашка", "custom": {"inn": "7701234567", "size": "M"}}
    )
    assert r.status_code == 201, r.text
    company = r.json()
    assert company["custom"] == {"inn": "7701234567", "size": "M"}
    r = admin.patch(f"/api/v1/companies/{company['id']}", json={"custom": {"size": "Huge"}})
    assert r.status_code == 422 and set(r.json()["errors"]) == {"custom.size"}
    r = admin.patch(f"/api/v1/companies/{company['id']}", json={"custom": {"size": None}})
    assert r.status_code == 200 and r.json()["custom"] == {"inn": "7701234567"}
    assert admin.get(f"/api/v1/companies/{company['id']}").json()["custom"] == {"inn": "7701234567"}
    # a contact's field of the same key is another field: "XL" is fine there
    r = admin.post("/api/v1/contacts", json={"name": "Анна", "custom": {"size": "XL"}})
    assert r.status_code == 201 and r.json()["custom"] == {"size": "XL"}
