"""Deals through the gateway: pipelines, a deal's whole life (moves, lost with a reason, reopened,
won), its stage history and the events it emits on the real broker, and the refusals."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import datetime
from typing import Any

import aio_pika
import pytest

from tests.support.hub import Api, HubProcess, eventually

pytestmark = pytest.mark.e2e


# ---- helpers ------------------------------------------------------------------------------------


class EventTap:
    """An exclusive queue bound to the hub's event exchange: what deals published, in order."""

    def __init__(self, rabbit: str, namespace: str, pattern: str = "deal.#") -> None:
        self.rabbit, self.namespace, self.pattern = rabbit, namespace, pattern
        self.seen: list[dict[str, Any]] = []

    async def __aenter__(self) -> EventTap:
        self.conn = await aio_pika.connect_robust(self.rabbit)
        channel = await self.conn.channel()
        self.queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await self.queue.bind(f"{self.namespace}.events", routing_key=self.pattern)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def wait_for(self, deal_id: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The envelopes about ``deal_id`` once ``count`` of them arrived (in publish order)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            mine = [e for e in self.seen if e["payload"].get("deal_id") == deal_id]
            if len(mine) >= count:
                return mine
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(mine)} of {count} events: {[e['event_type'] for e in mine]}")
            message = await self.queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                self.seen.append(json.loads(message.body))


def new_tenant(root: Api) -> Api:
    r = root.post("/api/v1/tenants", json={"name": f"Deals {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return root.as_key(r.json()["api_key"])


def user(admin: Api, role: str) -> Api:
    email = f"{role}-{uuid.uuid4().hex[:6]}@example.ru"
    r = admin.post("/api/v1/users", json={"name": role.title(), "role": role, "email": email})
    assert r.status_code == 201, r.text
    return admin.as_key(r.json()["api_key"])


def make_pipeline(admin: Api, name: str = "Продажи", **extra: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "stages": [
            {"name": "Новая заявка", "probability": 10},
            {"name": "Переговоры", "probability": 40},
            {"name": "Счёт выставлен", "probability": 80},
        ],
        **extra,
    }
    r = admin.post("/api/v1/pipelines", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def stage_ids(pipeline: dict[str, Any]) -> dict[str, str]:
    """Stage name → id, plus "won"/"lost" for the terminal ones."""
    out = {s["name"]: s["id"] for s in pipeline["stages"]}
    out.update({s["kind"]: s["id"] for s in pipeline["stages"] if s["kind"] != "open"})
    return out


def new_contact(api: Api) -> str:
    r = api.post("/api/v1/contacts", json={"name": f"Клиент {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def make_deal(api: Api, pipeline: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {
        "title": "Поставка",
        "contact_id": new_contact(api),
        "pipeline_id": pipeline["id"],
        **extra,
    }
    r = api.post("/api/v1/deals", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def move(api: Api, deal_id: str, stage_id: str, **extra: Any) -> Any:
    return api.post(f"/api/v1/deals/{deal_id}/move", json={"stage_id": stage_id, **extra})


def ts(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


# ---- the lifecycle --------------------------------------------------------------------------------


async def test_deal_created_moved_lost_reopened_and_won_with_history_and_events(
    admin: Api, hub: HubProcess, rabbit: str
) -> None:
    pipeline = make_pipeline(admin)
    kinds = [s["kind"] for s in pipeline["stages"]]
    assert kinds == ["open", "open", "open", "won", "lost"]
    assert pipeline["default"] is True  # the tenant's first pipeline
    ids = stage_ids(pipeline)
    assert admin.post("/api/v1/loss-reasons", json={"name": "Дорого"}).status_code == 201
    assert admin.post("/api/v1/loss-reasons", json={"name": "дорого"}).status_code == 409
    assert admin.get("/api/v1/loss-reasons").json()["items"] == [{"name": "Дорого"}]

    async with EventTap(rabbit, hub.namespace) as tap:
        deal = make_deal(admin, pipeline, amount=1999.99, currency="rub", expected_close="2026-06-30")
        assert deal["stage_id"] == ids["Новая заявка"]
        assert deal["status"] == "open"
        assert deal["amount"] == "1999.99" and deal["currency"] == "RUB"
        assert deal["probability"] == 10
        assert deal["weighted_amount"] == "200.00"
        deal_id = deal["id"]

        r = move(admin, deal_id, ids["Переговоры"])
        assert r.status_code == 200, r.text
        assert r.json()["probability"] == 40
        assert move(admin, deal_id, ids["Счёт выставлен"]).status_code == 200

        r = move(admin, deal_id, ids["lost"])
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "lost_reason" in r.json()["errors"]
        r = move(admin, deal_id, ids["lost"], lost_reason="Не сезон")
        assert r.status_code == 422 and "lost_reason" in r.json()["errors"]

        r = move(admin, deal_id, ids["lost"], lost_reason="ДОРОГО")
        assert r.status_code == 200, r.text
        lost = r.json()
        assert lost["status"] == "lost" and lost["lost_reason"] == "Дорого" and lost["probability"] == 0
        assert lost["lost_at"] is not None

        r = move(admin, deal_id, ids["Переговоры"])  # reopened
        assert r.status_code == 200, r.text
        reopened = r.json()
        assert reopened["status"] == "open" and reopened["reopened_at"] is not None
        assert reopened["probability"] == 40

        r = move(admin, deal_id, ids["won"])
        assert r.status_code == 200, r.text
        won = r.json()
        assert won["status"] == "won" and won["probability"] == 100 and won["won_at"] is not None

        events = await tap.wait_for(deal_id, 9)

    fetched = admin.get(f"/api/v1/deals/{deal_id}").json()
    history = fetched["stage_history"]
    assert [h["stage_id"] for h in history] == [
        ids["Новая заявка"],
        ids["Переговоры"],
        ids["Счёт выставлен"],
        ids["lost"],
        ids["Переговоры"],
        ids["won"],
    ]
    for before, after in itertools.pairwise(history):
        assert before["left_at"] == after["entered_at"]
        assert ts(before["entered_at"]) <= ts(before["left_at"])
    assert history[-1]["left_at"] is None
    assert history[0]["entered_at"] == fetched["created_at"]

    assert [e["event_type"] for e in events] == [
        "deal.created",
        "deal.stage_changed",
        "deal.stage_changed",
        "deal.stage_changed",
        "deal.lost",
        "deal.stage_changed",
        "deal.reopened",
        "deal.stage_changed",
        "deal.won",
    ]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_type.setdefault(e["event_type"], []).append(e["payload"])
    changes = by_type["deal.stage_changed"]
    assert [(c["from_stage_id"], c["to_stage_id"]) for c in changes] == [
        (history[i]["stage_id"], history[i + 1]["stage_id"]) for i in range(5)
    ]
    assert all(c["amount"] == "1999.99" and c["currency"] == "RUB" for c in changes)
    assert all(isinstance(c["time_in_stage_s"], int) and c["time_in_stage_s"] >= 0 for c in changes)
    assert changes[3]["from_kind"] == "lost" and changes[3]["reopened"] is True
    assert by_type["deal.lost"][0]["lost_reason"] == "Дорого"
    assert by_type["deal.won"][0]["amount"] == "1999.99"
    assert by_type["deal.reopened"][0]["previous_status"] == "lost"
    assert by_type["deal.created"][0]["stage_id"] == ids["Новая заявка"]
    assert "title" not in by_type["deal.created"][0]  # no personal data in events


def test_move_to_a_stage_of_another_pipeline_is_refused(admin: Api) -> None:
    sales = make_pipeline(admin)
    other = make_pipeline(admin, name="Партнёры")
    deal = make_deal(admin, sales)
    r = move(admin, deal["id"], stage_ids(other)["Переговоры"])
    assert r.status_code == 422
    assert "another pipeline" in r.json()["errors"]["stage_id"]
    r = move(admin, deal["id"], "no-such-stage")
    assert r.status_code == 422 and "stage_id" in r.json()["errors"]
    r = admin.patch(f"/api/v1/deals/{deal['id']}", json={"pipeline_id": other["id"]})
    assert r.status_code == 422 and "pipeline_id" in r.json()["errors"]
    assert admin.get(f"/api/v1/deals/{deal['id']}").json()["stage_id"] == deal["stage_id"]


def test_invalid_deals_are_refused_naming_the_fields(admin: Api) -> None:
    pipeline = make_pipeline(admin)
    r = admin.post(
        "/api/v1/deals",
        json={
            "title": " ",
            "contact_id": new_contact(admin),
            "pipeline_id": pipeline["id"],
            "amount": "12.345",
            "currency": "XYZ",
        },
    )
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert {"title", "amount", "currency"} <= set(errors)
    contact = new_contact(admin)
    r = admin.post("/api/v1/deals", json={"title": "X", "contact_id": contact, "pipeline_id": "nope"})
    assert r.status_code == 422 and "pipeline_id" in r.json()["errors"]
    assert admin.post(f"/api/v1/deals/{'missing'}/move", json={"stage_id": "s"}).status_code == 404


def test_a_deal_must_name_a_contact_and_an_owner_of_the_tenant(admin: Api, root: Api) -> None:
    pipeline = make_pipeline(admin)
    body = {"title": "X", "pipeline_id": pipeline["id"]}
    r = admin.post(
        "/api/v1/deals", json={**body, "contact_id": "no-such-contact", "owner_id": "no-such-user"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == {
        "contact_id": "is not a contact of this tenant",
        "owner_id": "is not an active user of this tenant",
    }
    stranger = new_contact(new_tenant(root))  # another tenant's contact is not one of ours
    r = admin.post("/api/v1/deals", json={**body, "contact_id": stranger})
    assert r.status_code == 422 and r.json()["errors"] == {"contact_id": "is not a contact of this tenant"}
    deal = make_deal(admin, pipeline)
    r = admin.patch(f"/api/v1/deals/{deal['id']}", json={"contact_id": stranger})
    assert r.status_code == 422 and "contact_id" in r.json()["errors"]
    assert admin.get(f"/api/v1/deals/{deal['id']}").json()["contact_id"] == deal["contact_id"]
    gone = new_contact(admin)
    assert admin.post(f"/api/v1/contacts/{gone}/erase").status_code == 200
    r = admin.post("/api/v1/deals", json={**body, "contact_id": gone})
    assert r.status_code == 422 and r.json()["errors"] == {"contact_id": "this contact was erased"}
    listed = admin.get("/api/v1/deals", params={"pipeline_id": pipeline["id"]}).json()["items"]
    assert [d["id"] for d in listed] == [deal["id"]]
    assert admin.post(f"/api/v1/deals/{'missing'}/move", json={"stage_id": "s"}).status_code == 404


def test_amount_is_a_decimal_string_and_probability_can_be_set_and_cleared(admin: Api) -> None:
    pipeline = make_pipeline(admin)
    deal = make_deal(admin, pipeline, amount="1999,99", currency="RUB")
    assert deal["amount"] == "1999.99"
    r = admin.patch(f"/api/v1/deals/{deal['id']}", json={"amount": 0.1, "probability": 55})
    assert r.status_code == 200, r.text
    assert r.json()["amount"] == "0.10" and r.json()["probability"] == 55
    assert r.json()["probability_explicit"] is True
    r = admin.patch(f"/api/v1/deals/{deal['id']}", json={"probability": None})
    assert r.json()["probability"] == 10 and r.json()["probability_explicit"] is False


# ---- roles and tenants --------------------------------------------------------------------------


def test_viewer_cannot_write_and_manager_works_on_own_deals_only(admin: Api) -> None:
    pipeline = make_pipeline(admin)
    ids = stage_ids(pipeline)
    admins_deal = make_deal(admin, pipeline, owner_id=None)
    owned = make_deal(admin, pipeline)
    viewer, manager = user(admin, "viewer"), user(admin, "manager")

    r = viewer.post("/api/v1/deals", json={"title": "X", "contact_id": "c1", "pipeline_id": pipeline["id"]})
    assert r.status_code == 403
    assert move(viewer, admins_deal["id"], ids["won"]).status_code == 403
    assert viewer.post("/api/v1/pipelines", json={"name": "P", "stages": [{"name": "A", "probability": 1}]}).status_code == 403  # fmt: skip
    assert viewer.get(f"/api/v1/deals/{admins_deal['id']}").status_code == 200  # unowned: readable

    mine = make_deal(manager, pipeline)
    me = manager.get("/api/v1/users/me").json()["id"]
    assert mine["owner_id"] == me
    assert move(manager, mine["id"], ids["Переговоры"]).status_code == 200
    assert move(manager, admins_deal["id"], ids["Переговоры"]).status_code == 200  # unowned
    # a deal owned by the admin is invisible to a manager (managers_see_all is off)
    admin_id = admin.get("/api/v1/users/me").json()["id"]
    theirs = admin.patch(f"/api/v1/deals/{owned['id']}", json={"owner_id": admin_id}).json()
    assert manager.get(f"/api/v1/deals/{theirs['id']}").status_code == 404
    assert move(manager, theirs["id"], ids["won"]).status_code == 404
    listed = {
        d["id"] for d in manager.get("/api/v1/deals", params={"pipeline_id": pipeline["id"]}).json()["items"]
    }
    assert mine["id"] in listed and admins_deal["id"] in listed and theirs["id"] not in listed
    r = manager.post(
        "/api/v1/deals",
        json={
            "title": "X",
            "contact_id": new_contact(manager),
            "pipeline_id": pipeline["id"],
            "owner_id": admin_id,
        },
    )
    assert r.status_code == 422 and "owner_id" in r.json()["errors"]


def test_other_tenant_gets_404_for_deals_and_pipelines(admin: Api, root: Api) -> None:
    pipeline = make_pipeline(admin)
    deal = make_deal(admin, pipeline)
    other = new_tenant(root)
    assert other.get(f"/api/v1/deals/{deal['id']}").status_code == 404
    assert other.get(f"/api/v1/pipelines/{pipeline['id']}").status_code == 404
    assert move(other, deal["id"], deal["stage_id"]).status_code == 404
    assert other.patch(f"/api/v1/deals/{deal['id']}", json={"title": "x"}).status_code == 404
    assert other.get("/api/v1/deals", params={"pipeline_id": pipeline["id"]}).json()["items"] == []
    assert other.get("/api/v1/pipelines").json()["items"] == []


# ---- listing ------------------------------------------------------------------------------------


def test_listing_by_pipeline_and_stage_is_paginated_with_a_cursor(admin: Api) -> None:
    pipeline = make_pipeline(admin)
    ids = stage_ids(pipeline)
    created = [make_deal(admin, pipeline)["id"] for _ in range(7)]
    moved = created[:2]
    for deal_id in moved:
        assert move(admin, deal_id, ids["Переговоры"]).status_code == 200

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"pipeline_id": pipeline["id"], "stage_id": ids["Новая заявка"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = admin.get("/api/v1/deals", params=params).json()
        pages += 1
        seen += [d["id"] for d in body["items"]]
        assert all(d["stage_id"] == ids["Новая заявка"] for d in body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert seen == sorted(created[2:], reverse=True)  # newest first, each once
    only_stage = admin.get("/api/v1/deals", params={"stage_id": ids["Переговоры"]}).json()["items"]
    assert sorted(d["id"] for d in only_stage) == sorted(moved)
    contact = admin.get(f"/api/v1/deals/{created[0]}").json()["contact_id"]
    assert [d["id"] for d in admin.get("/api/v1/deals", params={"contact_id": contact}).json()["items"]] == [
        created[0]
    ]
    assert admin.get("/api/v1/deals", params={"cursor": "%%%"}).status_code == 422


# ---- pipeline edits -----------------------------------------------------------------------------


def test_deleting_a_stage_with_deals_is_409_until_stage_moves_names_the_target(admin: Api) -> None:
    pipeline = make_pipeline(admin)
    ids = stage_ids(pipeline)
    deal = make_deal(admin, pipeline)
    assert move(admin, deal["id"], ids["Переговоры"]).status_code == 200
    keep = [{"id": ids["Новая заявка"]}, {"id": ids["Счёт выставлен"], "probability": 90}]

    r = admin.patch(f"/api/v1/pipelines/{pipeline['id']}", json={"stages": keep})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "stage_has_deals"
    assert f"stages.{ids['Переговоры']}" in r.json()["errors"]
    assert len(admin.get(f"/api/v1/pipelines/{pipeline['id']}").json()["stages"]) == 5

    r = admin.patch(
        f"/api/v1/pipelines/{pipeline['id']}",
        json={"stages": keep, "stage_moves": {ids["Переговоры"]: ids["Счёт выставлен"]}},
    )
    assert r.status_code == 200, r.text
    assert [s["name"] for s in r.json()["stages"]] == ["Новая заявка", "Счёт выставлен", "Won", "Lost"]
    moved = admin.get(f"/api/v1/deals/{deal['id']}").json()
    assert moved["stage_id"] == ids["Счёт выставлен"]
    assert moved["probability"] == 90  # the re-weighted stage
    assert [h["stage_id"] for h in moved["stage_history"]][-2:] == [ids["Переговоры"], ids["Счёт выставлен"]]

    # the single-stage form: DELETE .../stages/{id}?move_to=
    r = admin.delete(f"/api/v1/pipelines/{pipeline['id']}/stages/{ids['Счёт выставлен']}")
    assert r.status_code == 409
    r = admin.delete(
        f"/api/v1/pipelines/{pipeline['id']}/stages/{ids['Счёт выставлен']}",
        params={"move_to": ids["Новая заявка"]},
    )
    assert r.status_code == 200, r.text
    assert admin.get(f"/api/v1/deals/{deal['id']}").json()["stage_id"] == ids["Новая заявка"]


def test_a_new_default_pipeline_demotes_the_old_one(admin: Api) -> None:
    first = make_pipeline(admin)
    second = make_pipeline(admin, name="B2B", default=True)
    listed = {p["id"]: p["default"] for p in admin.get("/api/v1/pipelines").json()["items"]}
    assert listed == {first["id"]: False, second["id"]: True}
    r = admin.post("/api/v1/deals", json={"title": "Без воронки", "contact_id": new_contact(admin)})
    assert r.status_code == 201 and r.json()["pipeline_id"] == second["id"]


# ---- import -------------------------------------------------------------------------------------


def test_import_replays_historical_stage_dates(admin: Api) -> None:
    pipeline = make_pipeline(admin)
    ids = stage_ids(pipeline)
    body = {
        "pipeline_id": pipeline["id"],
        "deals": [
            {
                "external_id": "amo-1",
                "title": "Старая сделка",
                "contact_id": "c-old",
                "amount": 50000,
                "currency": "RUB",
                "source": {"utm_source": "yandex", "kind": "form"},
                "stage_history": [
                    {"stage": "Новая заявка", "entered_at": "2025-01-10T09:00:00+03:00"},
                    {"stage_id": ids["Переговоры"], "entered_at": "2025-01-15T10:00:00+03:00"},
                    {"stage": "Won", "entered_at": "2025-02-01T12:00:00+03:00"},
                ],
            }
        ],
    }
    r = admin.post("/api/v1/deals/import", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 1
    deal = admin.get(f"/api/v1/deals/{r.json()['items'][0]['id']}").json()
    assert deal["status"] == "won" and deal["amount"] == "50000.00"
    assert deal["source"] == {"utm_source": "yandex", "kind": "form"}
    history = deal["stage_history"]
    assert [h["stage_id"] for h in history] == [ids["Новая заявка"], ids["Переговоры"], ids["won"]]
    assert ts(history[0]["entered_at"]) == datetime.fromisoformat("2025-01-10T09:00:00+03:00")
    assert history[0]["left_at"] == history[1]["entered_at"]
    assert ts(deal["won_at"]) == datetime.fromisoformat("2025-02-01T12:00:00+03:00")

    again = admin.post("/api/v1/deals/import", json=body)
    assert again.status_code == 201 and again.json()["created"] == 0  # external_id: not twice

    bad = {"deals": [{**body["deals"][0], "external_id": "amo-2", "stage_history": [{"stage": "Nope", "entered_at": "2025-01-01"}]}]}  # fmt: skip
    r = admin.post("/api/v1/deals/import", json=bad)
    assert r.status_code == 422 and "deals.0.stage_history.0.stage" in r.json()["errors"]


def test_pipeline_validation_names_the_bad_stage_and_openapi_documents_the_routes(admin: Api) -> None:
    r = admin.post(
        "/api/v1/pipelines",
        json={"name": "P", "stages": [{"name": "A", "probability": 10}, {"name": "a", "probability": 150}]},
    )
    assert r.status_code == 422
    assert {"stages.1.probability", "stages.1.name"} <= set(r.json()["errors"])
    r = admin.post("/api/v1/pipelines", json={"name": "P", "stages": []})
    assert r.status_code == 422 and "stages" in r.json()["errors"]
    paths = admin.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/pipelines",
        "/api/v1/pipelines/{pipeline_id}",
        "/api/v1/loss-reasons",
        "/api/v1/deals",
        "/api/v1/deals/{deal_id}",
        "/api/v1/deals/{deal_id}/move",
        "/api/v1/deals/import",
    ):
        assert path in paths, path
    assert "patch" in paths["/api/v1/deals/{deal_id}"] and "patch" in paths["/api/v1/pipelines/{pipeline_id}"]


def test_only_an_empty_pipeline_can_be_deleted_and_the_default_passes_on(admin: Api, root: Api) -> None:
    sales = make_pipeline(admin)  # the tenant's first pipeline: the default
    b2b = make_pipeline(admin, name="B2B")
    spare = make_pipeline(admin, name="Запасная")
    assert sales["default"] and not b2b["default"]

    deal = make_deal(admin, b2b)
    move(admin, deal["id"], stage_ids(b2b)["lost"], lost_reason="Дорого")
    r = admin.delete(f"/api/v1/pipelines/{b2b['id']}")
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "pipeline_has_deals" and "1 deal" in r.json()["errors"]["pipeline_id"]
    assert admin.get(f"/api/v1/pipelines/{b2b['id']}").status_code == 200

    assert user(admin, "manager").delete(f"/api/v1/pipelines/{spare['id']}").status_code == 403
    assert new_tenant(root).delete(f"/api/v1/pipelines/{spare['id']}").status_code == 404
    assert admin.delete(f"/api/v1/pipelines/{spare['id']}").status_code == 204
    assert admin.get(f"/api/v1/pipelines/{spare['id']}").status_code == 404
    assert admin.delete(f"/api/v1/pipelines/{spare['id']}").status_code == 404

    # the empty default goes; the oldest remaining pipeline becomes the default
    assert admin.delete(f"/api/v1/pipelines/{sales['id']}").status_code == 204
    listed = {p["id"]: p["default"] for p in admin.get("/api/v1/pipelines").json()["items"]}
    assert listed == {b2b["id"]: True}
    r = admin.post("/api/v1/deals", json={"title": "Без воронки", "contact_id": new_contact(admin)})
    assert r.status_code == 201 and r.json()["pipeline_id"] == b2b["id"]
    # the funnel report without a pipeline follows the new default
    funnel = eventually(
        lambda: (f := admin.get("/api/v1/reports/funnel").json()).get("pipeline_id") == b2b["id"] and f
    )
    assert funnel["pipeline_id"] == b2b["id"]
