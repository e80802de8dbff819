"""What a schema fuzzer and real clients found: keys the database refuses, nesting too deep, an
HTTP method nobody documented. Each is a 4xx problem naming what is wrong, never a 500."""

from __future__ import annotations

import json

import httpx

from tests.support.hub import Api, HubProcess

PROBLEM = "application/problem+json"


def problem(r: httpx.Response, status: int) -> dict:  # type: ignore[type-arg]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    return r.json()  # type: ignore[no-any-return]


def test_a_nul_or_operator_key_in_a_channels_config_is_a_422_naming_config(admin: Api) -> None:
    for key in ("a\u0000b", "$where", ".hidden"):
        body = {"kind": "form", "name": "Site", "config": {key: 1}}
        assert "config" in problem(admin.post("/api/v1/channels", json=body), 422)["errors"]
    channel = admin.post("/api/v1/channels", json={"kind": "form", "name": "Site"}).json()
    patch = {"config": {"nested": {"a\u0000b": 1}}}
    assert "config" in problem(admin.patch(f"/api/v1/channels/{channel['id']}", json=patch), 422)["errors"]


def test_a_nul_key_in_an_interactions_data_is_a_422_naming_data(admin: Api) -> None:
    contact = admin.post("/api/v1/contacts", json={"name": "Nul"}).json()
    body = {"kind": "note", "summary": "x", "data": {"a\u0000b": 1}}
    r = admin.post(f"/api/v1/contacts/{contact['id']}/interactions", json=body)
    assert "data" in problem(r, 422)["errors"]


def test_json_nested_hundreds_deep_is_a_422_not_a_500(admin: Api) -> None:
    for depth in (500, 900):
        deep = "[" * depth + "]" * depth
        raw = '{"kind": "form", "name": "Deep", "config": {"x": ' + deep + "}}"
        r = admin.post("/api/v1/channels", content=raw.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        contact = admin.post("/api/v1/contacts", json={"name": "Deep"}).json()
        raw = json.dumps({"kind": "note", "summary": "x"})[:-1] + ', "data": {"x": ' + deep + "}}"
        r = admin.post(
            f"/api/v1/contacts/{contact['id']}/interactions",
            content=raw.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422, r.text


def test_trace_is_a_405_with_allow_and_options_on_hooks_advertises_no_put(
    hub: HubProcess, admin: Api
) -> None:
    r = httpx.request("TRACE", hub.url + "/api/v1/contacts")
    assert r.status_code == 405 and "Allow" in r.headers and "TRACE" not in r.headers["Allow"]
    channel = admin.post("/api/v1/channels", json={"kind": "form", "name": "Opt"}).json()
    r = httpx.options(hub.url + f"/hooks/{channel['id']}")
    allow = {m.strip() for m in r.headers.get("Allow", "").split(",") if m.strip()}
    assert "PUT" not in allow and {"GET", "POST"} <= allow
