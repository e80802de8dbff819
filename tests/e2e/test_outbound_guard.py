"""Server-side request forgery: a hub without ``CRM_ALLOW_PRIVATE_URLS`` refuses every address of
its own network that a tenant asks it to call (subscriptions, rule webhooks, Meta's Graph base URL,
IMAP hosts), whatever the spelling, with a 422 naming the field."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hub import Api, HubProcess

PROBLEM = "application/problem+json"
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex
PRIVATE = [
    "http://127.0.0.1/hook",
    "http://[::1]/hook",
    "http://2130706433/hook",
    "http://127.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/hook",
    "http://example.com:5672/",
]
META_SECRETS = {"app_secret": "app-secret", "verify_token": "verify", "page_access_token": "page-token"}


@pytest.fixture(scope="module")
def strict_hub(rabbit: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(
        rabbit_url=rabbit,
        mongo_url=mongo_url,
        data_dir=Path(tmp_path_factory.mktemp("hub-strict")),
        env={"CRM_ALLOW_PRIVATE_URLS": "0", "CRM_METRICS_TOKEN": METRICS_TOKEN},
    )
    with proc.serving():
        yield proc


@pytest.fixture
def strict_admin(strict_hub: HubProcess) -> Api:
    root = Api(strict_hub.url, strict_hub.root_token)
    r = root.post("/api/v1/tenants", json={"name": f"Strict {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return root.as_key(r.json()["api_key"])


def refused(r: object, field: str) -> None:
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith(PROBLEM)  # type: ignore[attr-defined]
    assert field in r.json()["errors"], r.text  # type: ignore[attr-defined]


def test_subscriptions_to_internal_addresses_are_refused_on_create_and_update(strict_admin: Api) -> None:
    for url in PRIVATE:
        body = {"url": url, "events": ["*"], "secret": "s3cret-value"}
        refused(strict_admin.post("/api/v1/subscriptions", json=body), "url")
    ok = strict_admin.post(
        "/api/v1/subscriptions",
        json={"url": "https://erp.example.com/h", "events": ["*"], "secret": "s3cret-v"},
    )
    assert ok.status_code == 201, ok.text
    refused(strict_admin.patch(f"/api/v1/subscriptions/{ok.json()['id']}", json={"url": PRIVATE[4]}), "url")


def test_rule_webhooks_to_internal_addresses_are_refused(strict_admin: Api) -> None:
    for url in PRIVATE:
        rule = {"name": "x", "event_type": "contact.created", "actions": [{"type": "webhook", "url": url}]}
        refused(strict_admin.post("/api/v1/automation-rules", json=rule), "actions.0.url")


def test_meta_graph_base_url_must_be_metas_host(strict_admin: Api) -> None:
    for base in ("http://127.0.0.1:9/v19.0", "https://attacker.example.com/v19.0"):
        body = {
            "kind": "meta_leads",
            "name": "m",
            "secrets": META_SECRETS,
            "config": {"graph_base_url": base},
        }
        refused(strict_admin.post("/api/v1/channels", json=body), "config.graph_base_url")
    ok = {"kind": "meta_leads", "name": "m", "secrets": META_SECRETS}
    r = strict_admin.post("/api/v1/channels", json=ok)
    assert r.status_code == 201, r.text
    patch = {"config": {"graph_base_url": "http://169.254.169.254/"}}
    refused(strict_admin.patch(f"/api/v1/channels/{r.json()['id']}", json=patch), "config.graph_base_url")


def test_imap_hosts_and_ports_of_the_hubs_network_are_refused(strict_admin: Api) -> None:
    for config, field in (
        ({"host": "127.0.0.1", "port": 143, "ssl": "none"}, "config.host"),
        ({"host": "2130706433", "ssl": "none"}, "config.host"),
        ({"host": "imap.example.com", "port": 5672}, "config.port"),
    ):
        body = {
            "kind": "imap",
            "name": "mail",
            "config": {**config, "username": "u"},
            "secrets": {"password": "p"},
        }
        refused(strict_admin.post("/api/v1/channels", json=body), field)


def test_metrics_need_the_configured_metrics_token(strict_hub: HubProcess) -> None:
    """(Shares this hub with the guard tests: a hub with ``CRM_METRICS_TOKEN`` set.)"""
    url = strict_hub.url + "/metrics"
    assert httpx.get(url).status_code == 401
    root = {"Authorization": f"Bearer {strict_hub.root_token}"}
    assert httpx.get(url, headers=root).status_code == 401  # the token replaces the root token
    r = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200 and "crm_http_requests_total" in r.text
