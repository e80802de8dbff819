"""What a channel's config makes the hub call, checked by the outbound guard on create and update.

- ``meta_leads``: ``config.graph_base_url`` must be Meta's Graph host (any host passing the guard
  when ``CRM_ALLOW_PRIVATE_URLS`` is on, for a local stand-in).
- provider base URLs (``config.api_base_url``) pass the guard.
- ``imap``: ``config.host``/``port`` (and ``smtp_host``/``smtp_port``) pass the guard, ports limited
  to the mail ports.

The same guard runs again at every call (the connectors' HTTP client and the IMAP connect).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.netguard import IMAP_PORTS, UrlGuard, UrlRefused

META_GRAPH_HOSTS = frozenset({"graph.facebook.com"})
SMTP_PORTS = frozenset({25, 465, 587})
MAIL_SECURITY = ("tls", "starttls", "none")


def mail_security(config: Mapping[str, Any], name: str) -> str:
    """``config[name]`` (``ssl``, ``smtp_ssl``) as ``tls``/``starttls``/``none`` (unset: ``tls``).
    Raises ``ValueError`` naming the field for anything else: ``false`` is not quietly TLS."""
    value = config.get(name)
    if value is None or value == "":
        return "tls"
    if isinstance(value, str) and value.strip().lower() in MAIL_SECURITY:
        return value.strip().lower()
    raise ValueError(f"config.{name} must be one of tls, starttls, none")


def mail_config_errors(kind: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The imap channel's ``ssl``/``smtp_ssl`` values that are not one of :data:`MAIL_SECURITY`."""
    errors: dict[str, str] = {}
    if kind != "imap":
        return errors
    for name in ("ssl", "smtp_ssl"):
        try:
            mail_security(config, name)
        except ValueError:
            errors[f"config.{name}"] = "must be one of tls, starttls, none"
    return errors


async def channel_url_errors(kind: str, config: Mapping[str, Any], guard: UrlGuard) -> dict[str, str]:
    """``{"config.<field>": why}`` for every address of ``config`` the guard refuses."""
    errors: dict[str, str] = {}
    for name in ("graph_base_url", "api_base_url"):
        value = config.get(name)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            errors[f"config.{name}"] = "must be a URL"
            continue
        hosts = META_GRAPH_HOSTS if name == "graph_base_url" else None
        try:
            await guard.validate(value, hosts=hosts)
        except UrlRefused as exc:
            errors[f"config.{name}"] = str(exc)
    if kind == "imap":
        bad = mail_config_errors(kind, config)
        ssl_mode = "tls" if "config.ssl" in bad else mail_security(config, "ssl")
        _host_errors(errors, guard, config, "host", "port", 993 if ssl_mode == "tls" else 143, IMAP_PORTS)
        if config.get("smtp_host"):
            smtp_ssl = "tls" if "config.smtp_ssl" in bad else mail_security(config, "smtp_ssl")
            default = 465 if smtp_ssl == "tls" else 587
            _host_errors(errors, guard, config, "smtp_host", "smtp_port", default, SMTP_PORTS)
    return errors


def _host_errors(
    errors: dict[str, str],
    guard: UrlGuard,
    config: Mapping[str, Any],
    host_field: str,
    port_field: str,
    default_port: int,
    ports: frozenset[int],
) -> None:
    host = str(config.get(host_field) or "").strip()
    if not host:
        return
    try:
        port = int(config.get(port_field) or default_port)
    except (TypeError, ValueError):
        return  # the IMAP config check names a bad port
    try:
        guard.check_host(host, port, ports=ports)
    except UrlRefused as exc:
        field = port_field if "port" in str(exc) else host_field
        errors[f"config.{field}"] = str(exc)
