"""The broker layout: one queue per consuming service, public and internal events apart, and the
definitions in deploy/ equal to what the hub declares."""

from __future__ import annotations

import json
from pathlib import Path

from crm.cli import definitions, installation, legacy_queue_names
from shared.bus import Topology

ROOT = Path(__file__).resolve().parents[3]


def test_deploy_definitions_are_what_the_hub_declares() -> None:
    committed = json.loads((ROOT / "deploy" / "rabbitmq-definitions.json").read_text())
    assert committed == definitions("crm", "quorum"), (
        "run `crm broker definitions > deploy/rabbitmq-definitions.json`"
    )


def test_one_queue_per_consuming_service_and_about_ten_in_all() -> None:
    defs = definitions("crm", "quorum")
    names = [q["name"] for q in defs["queues"]]
    consuming = {f"crm.{n}" for n in ("contacts", "deals", "tasks", "analytics", "connectors", "gateway")}
    assert consuming <= set(names)
    assert len(names) <= 12
    for q in defs["queues"]:
        if q["name"] in consuming:
            assert q["arguments"] == {
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "crm.dead-letter",
                "x-delivery-limit": 5,
            }
    # every routing key a service handles is bound to its one queue
    hub = installation("crm")
    bound = {(b["destination"], b["routing_key"]) for b in defs["bindings"]}
    for svc in hub.services.values():
        for rk in svc.events.handlers:
            assert (f"crm.{svc.name}", rk) in bound


def test_classic_queues_dead_letter_without_a_broker_delivery_limit() -> None:
    args = Topology("crm", retry_limit=3, queue_type="classic").queue_arguments()
    assert args == {"x-queue-type": "classic", "x-dead-letter-exchange": "crm.dead-letter"}


def test_raw_requests_and_hand_offs_travel_on_the_internal_exchange() -> None:
    t = Topology("crm")
    for internal in (
        "hook.received",
        "mail.received",
        "interaction.captured",
        "rule.webhook_requested",
        "user.changed",
    ):
        assert t.exchange_for(internal) == "crm.internal"
    for public in (
        "contact.created",
        "deal.won",
        "task.created",
        "inbox.item_opened",
        "interaction.recorded",
    ):
        assert t.exchange_for(public) == "crm.events"
    hub = installation("crm")
    gateway_keys = set(hub.services["gateway"].events.handlers)
    assert gateway_keys == {"#", "rule.webhook_requested.v1"}


def test_the_old_layout_queues_are_known_for_the_migration() -> None:
    old = legacy_queue_names("crm")
    assert "crm.connectors.hooks.hook.received.v1" in old
    assert "crm.contacts.interaction.captured.v1" in old
    assert "crm.analytics.deal_won.deal.won.v1" in old
    assert "crm.gateway-webhooks.#" in old
    assert len(old) >= 47
