"""The one guard of every outbound connection the hub makes (webhooks, provider fetches, IMAP).

An address the hub is asked to call (a subscription URL, a rule's webhook, Meta's Graph base URL, a
mailbox host) comes from a tenant, so it must not reach the hub's own network: loopback, private,
link-local (cloud metadata at ``169.254.169.254``), CGNAT, multicast, reserved and unspecified
addresses are refused in IPv4 and IPv6, whatever spelling names them (``2130706433``, ``127.1``,
``0x7f.1``, ``[::ffff:127.0.0.1]``). The name is resolved once and the connection goes to the
address that was checked (:class:`GuardedTransport` for httpx, :func:`pinned_address` for sockets),
so a second DNS answer cannot move it (rebinding). URLs with credentials are refused; ports are
limited to the usual ones.

``CRM_ALLOW_PRIVATE_URLS=1`` (tests, local development) lifts the address and port rules; the
scheme and credential rules stay.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

HTTP_PORTS = frozenset({80, 443, 8080, 8443})
IMAP_PORTS = frozenset({143, 993})
BLOCKED_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal", "metadata")
RESOLVE_TIMEOUT_S = 5.0

# Ranges Python's ``ipaddress`` does not flag on every supported version.
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "192.0.0.0/24",
        "198.18.0.0/15",
        "240.0.0.0/4",
        "64:ff9b:1::/48",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
    )
)


class UrlRefused(ValueError):
    """The address may not be called; the message says why (safe to show the tenant)."""


class BlockedAddress(httpx.ConnectError):
    """Raised by :class:`GuardedTransport` for a refused destination (an ``httpx.HTTPError``)."""


def parse_ip(host: str) -> Address | None:
    """The address a host string denotes, in any spelling the resolver would accept, else None."""
    h = host.strip().strip("[]").rstrip(".")
    if "%" in h:  # an IPv6 zone id
        h = h.split("%", 1)[0]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if h and all(c in "0123456789abcdefxABCDEFX." for c in h):
        try:  # legacy IPv4 forms: 2130706433, 127.1, 0x7f.1, 0177.0.0.1
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def is_public(ip: Address) -> bool:
    """True only for a globally routable unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return is_public(embedded)
        if ip in ipaddress.ip_network("64:ff9b::/96"):
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    ):
        return False
    return not any(ip.version == net.version and ip in net for net in _EXTRA_BLOCKED)


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    """A checked destination: the name to send (Host, SNI) and the address to connect to."""

    host: str
    port: int
    address: str


@dataclass(frozen=True)
class UrlGuard:
    """The policy; ``allow_private`` is ``CRM_ALLOW_PRIVATE_URLS``."""

    allow_private: bool = False
    resolver: Resolver = field(default=system_resolver)
    ports: frozenset[int] = HTTP_PORTS

    @classmethod
    def from_settings(cls, settings: Any) -> UrlGuard:
        return cls(allow_private=bool(getattr(settings, "allow_private_urls", False)))

    # ---- static checks (no network) ------------------------------------------------------------

    def check_url(self, url: str, *, hosts: Iterable[str] | None = None) -> tuple[str, int]:
        """Scheme, credentials, port and literal addresses; returns ``(host, port)``.

        ``hosts``: when given (and private URLs are not allowed), the only host names accepted.
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise UrlRefused("is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlRefused("must be an absolute http(s) URL")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise UrlRefused("must not carry credentials")
        port = port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        if hosts is not None and not self.allow_private and host.lower() not in set(hosts):
            raise UrlRefused("must point at " + ", ".join(sorted(hosts)))
        self.check_host(host, port)
        return host, port

    def check_host(self, host: str, port: int, *, ports: frozenset[int] | None = None) -> None:
        """Port and literal-address rules for a host name or address."""
        if not 0 < port < 65536:
            raise UrlRefused("has an invalid port")
        if self.allow_private:
            return
        if port not in (ports or self.ports):
            allowed = ", ".join(str(p) for p in sorted(ports or self.ports))
            raise UrlRefused(f"port {port} is not allowed (allowed: {allowed})")
        name = host.strip().strip("[]").rstrip(".").lower()
        if name in BLOCKED_NAMES or name.endswith((".localhost", ".internal", ".local")):
            raise UrlRefused("points at a local name")
        ip = parse_ip(name)
        if ip is not None and not is_public(ip):
            raise UrlRefused("points at a private, loopback or link-local address")

    # ---- resolution ----------------------------------------------------------------------------

    async def resolve(self, host: str, port: int, *, ports: frozenset[int] | None = None) -> Target:
        """Check, resolve and check every address; the first one is where to connect."""
        self.check_host(host, port, ports=ports)
        literal = parse_ip(host)
        if literal is not None:
            return Target(host, port, str(literal))
        try:
            addresses = await self.resolver(host.rstrip("."), port)
        except (OSError, TimeoutError) as exc:
            raise UrlRefused("does not resolve") from exc
        return self._checked(host, port, addresses)

    def _checked(self, host: str, port: int, addresses: list[str]) -> Target:
        """The target for what ``host`` resolved to: refused when any address is not public."""
        if not addresses:
            raise UrlRefused("does not resolve")
        if not self.allow_private:
            for a in addresses:
                ip = parse_ip(a)
                if ip is None or not is_public(ip):
                    raise UrlRefused("resolves to a private, loopback or link-local address")
        return Target(host, port, addresses[0])

    async def validate(self, url: str, *, hosts: Iterable[str] | None = None) -> str:
        """The check when an address is stored (create, update): static rules, then DNS. A name
        that does not resolve yet is accepted (it is checked again at every call)."""
        host, port = self.check_url(url, hosts=hosts)
        try:
            await self.resolve(host, port)
        except UrlRefused as exc:
            if str(exc) != "does not resolve":
                raise
        return url.strip()

    def resolve_sync(self, host: str, port: int, *, ports: frozenset[int] | None = None) -> Target:
        """:meth:`resolve` for blocking code (the IMAP poller's thread)."""
        self.check_host(host, port, ports=ports)
        literal = parse_ip(host)
        if literal is not None:
            return Target(host, port, str(literal))
        try:
            infos = socket.getaddrinfo(host.rstrip("."), port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UrlRefused("does not resolve") from exc
        addresses = [str(i[4][0]) for i in infos]
        return self._checked(host, port, addresses)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request against the guard and connects to the checked
    address, keeping the ``Host`` header and the TLS server name of the original host."""

    def __init__(
        self,
        guard: UrlGuard,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        hosts: Iterable[str] | None = None,
    ) -> None:
        self.guard = guard
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.hosts = frozenset(hosts) if hosts is not None else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        try:
            host, port = self.guard.check_url(str(url), hosts=self.hosts)
            target = await self.guard.resolve(host, port)
        except UrlRefused as exc:
            raise BlockedAddress(f"destination refused: {exc}", request=request) from None
        request.url = url.copy_with(host=target.address)
        if "host" not in request.headers:
            request.headers["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class PinnedContext:
    """An ``ssl.SSLContext`` stand-in that verifies the original host name while the socket is
    connected to its checked address (for clients that take a host and a context)."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self._server_hostname
        return self._context.wrap_socket(sock, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
