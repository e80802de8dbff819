"""The outbound guard: every spelling of a private address is refused, names are resolved once and
the connection goes to the checked address, credentials and odd ports are refused."""

from __future__ import annotations

import asyncio
from datetime import date

import httpx
import pytest

from services.connectors.mail.poller import ImapConfig, connect
from services.connectors.outbound import channel_url_errors
from shared.netguard import BlockedAddress, GuardedTransport, UrlGuard, UrlRefused

PRIVATE = [
    "http://127.0.0.1/hook",
    "http://[::1]/hook",
    "http://2130706433/hook",
    "http://127.1/hook",
    "http://0x7f.0.0.1/hook",
    "http://0177.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.7/hook",
    "http://172.16.1.1/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://224.0.0.1/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fd12::1]/hook",
    "http://[fe80::1]/hook",
    "http://localhost/hook",
    "http://api.localhost/hook",
]


def dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such name")
        return table[host]

    return resolve


@pytest.mark.parametrize("url", PRIVATE)
def test_private_loopback_and_metadata_addresses_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        UrlGuard().check_url(url)


@pytest.mark.parametrize(
    "url", ["http://user:pw@example.com/", "http://example.com:5672/", "ftp://example.com/", "file:///etc/x"]
)
def test_credentials_odd_ports_and_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        UrlGuard().check_url(url)


def test_a_public_address_on_a_web_port_passes() -> None:
    assert UrlGuard().check_url("https://8.8.8.8/x") == ("8.8.8.8", 443)
    assert UrlGuard().check_url("http://erp.example.com:8080/x") == ("erp.example.com", 8080)


def test_the_opt_in_allows_loopback_on_any_port_but_not_credentials() -> None:
    guard = UrlGuard(allow_private=True)
    assert guard.check_url("http://127.0.0.1:5672/") == ("127.0.0.1", 5672)
    with pytest.raises(UrlRefused):
        guard.check_url("http://u:p@127.0.0.1/")


async def test_a_name_resolving_to_a_private_address_is_refused_on_create() -> None:
    guard = UrlGuard(resolver=dns({"evil.example.com": ["93.184.215.14", "127.0.0.1"]}))
    with pytest.raises(UrlRefused, match="resolves to a private"):
        await guard.validate("https://evil.example.com/hook")


async def test_delivery_connects_to_the_checked_address_keeping_host_and_sni() -> None:
    seen: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    guard = UrlGuard(resolver=dns({"erp.example.com": ["93.184.215.14"]}))
    transport = GuardedTransport(guard, httpx.MockTransport(endpoint))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.post("https://erp.example.com/hook", content=b"{}")).status_code == 204
    [req] = seen
    assert req.url.host == "93.184.215.14"
    assert req.headers["host"] == "erp.example.com"
    assert req.extensions["sni_hostname"] == "erp.example.com"


async def test_a_name_that_rebinds_to_loopback_is_refused_at_delivery() -> None:
    """Validated while it pointed outside; at delivery time it resolves to loopback."""
    table = {"rebind.example.com": ["93.184.215.14"]}
    guard = UrlGuard(resolver=dns(table))
    await guard.validate("http://rebind.example.com/hook")
    table["rebind.example.com"] = ["127.0.0.1"]
    calls: list[httpx.Request] = []
    transport = GuardedTransport(guard, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(BlockedAddress):
            await client.post("http://rebind.example.com/hook")
    assert calls == []


async def test_meta_graph_base_url_accepts_only_metas_host() -> None:
    guard = UrlGuard(resolver=dns({}))
    bad = await channel_url_errors(
        "meta_leads", {"graph_base_url": "https://attacker.example.com/v19"}, guard
    )
    assert "config.graph_base_url" in bad
    local = await channel_url_errors("meta_leads", {"graph_base_url": "http://127.0.0.1:9/v19"}, guard)
    assert "config.graph_base_url" in local
    assert (
        await channel_url_errors("meta_leads", {"graph_base_url": "https://graph.facebook.com/v19.0"}, guard)
        == {}
    )


async def test_imap_host_and_port_pass_the_guard() -> None:
    guard = UrlGuard(resolver=dns({}))
    assert "config.host" in await channel_url_errors("imap", {"host": "127.0.0.1", "username": "u"}, guard)
    assert "config.host" in await channel_url_errors("imap", {"host": "169.254.169.254"}, guard)
    assert "config.port" in await channel_url_errors(
        "imap", {"host": "imap.example.com", "port": 5672}, guard
    )
    assert await channel_url_errors("imap", {"host": "imap.example.com", "port": 993}, guard) == {}


async def test_the_imap_connect_refuses_loopback_before_opening_a_socket() -> None:
    cfg = ImapConfig(
        host="127.0.0.1", port=143, ssl="none", username="u", password="p", since=date(2026, 1, 1)
    )
    with pytest.raises(UrlRefused):
        await asyncio.to_thread(connect, cfg)
