"""The console is static files on the gateway's own origin: no other host, no build step."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.hub import HubProcess

pytestmark = pytest.mark.e2e


def test_console_pages_and_assets_come_from_the_gateway_only(hub: HubProcess) -> None:
    with httpx.Client(base_url=hub.url) as http:
        for path in ("/app", "/app/login", "/app/contacts/some-id"):
            r = http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "default-src 'self'" in r.headers["content-security-policy"]
        page = http.get("/app").text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert assets and all(a.startswith("/app/static/") or a == "data:," for a in assets)
        for name in ("app.js", "api.js", "dom.js", "i18n.js", "charts.js", "app.css"):
            r = http.get(f"/app/static/{name}")
            assert r.status_code == 200, name
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", r.text), name
        assert http.get("/app/static/missing.js").status_code == 404
        paths = http.get("/openapi.json").json()["paths"]
        assert {"/app", "/app/login", "/api/v1/sessions", "/api/v1/sessions/current"} <= set(paths)
