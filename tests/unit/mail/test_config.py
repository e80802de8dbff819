"""ImapConfig from an imap channel's config and secrets (API.md)."""

from __future__ import annotations

from datetime import date

import pytest

from services.connectors.mail.poller import config_from_channel

pytestmark = pytest.mark.unit

TODAY = date(2026, 3, 31)


def test_defaults_follow_the_api_contract() -> None:
    cfg = config_from_channel(
        {"host": "imap.example.ru", "username": "sales@corp.example"},
        {"password": "pw"},
        today=TODAY,
    )
    assert cfg.ssl == "tls" and cfg.effective_port == 993
    assert cfg.folders is None  # INBOX + the Sent folder found on the server
    assert cfg.since == date(2026, 3, 1)  # 30 days back


def test_explicit_values_are_used() -> None:
    cfg = config_from_channel(
        {
            "host": "mail.corp.example",
            "port": "143",
            "ssl": "STARTTLS",
            "username": "u",
            "folders": ["INBOX", "Отправленные"],
            "since": "2025-01-15",
        },
        {"password": "pw"},
        today=TODAY,
    )
    assert (cfg.port, cfg.ssl, cfg.effective_port) == (143, "starttls", 143)
    assert cfg.folders == ("INBOX", "Отправленные")
    assert cfg.since == date(2025, 1, 15)


@pytest.mark.parametrize(
    ("config", "secrets", "field"),
    [
        ({"username": "u"}, {"password": "p"}, "config.host"),
        ({"host": "h"}, {"password": "p"}, "config.username"),
        ({"host": "h", "username": "u"}, {}, "secrets.password"),
        ({"host": "h", "username": "u", "ssl": "ssl3"}, {"password": "p"}, "config.ssl"),
        ({"host": "h", "username": "u", "port": "x"}, {"password": "p"}, "config.port"),
        ({"host": "h", "username": "u", "port": 70000}, {"password": "p"}, "config.port"),
        ({"host": "h", "username": "u", "since": "yesterday"}, {"password": "p"}, "config.since"),
        ({"host": "h", "username": "u", "folders": "INBOX"}, {"password": "p"}, "config.folders"),
    ],
)
def test_bad_values_name_the_field(config: dict, secrets: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        config_from_channel(config, secrets, today=TODAY)


@pytest.mark.parametrize("value", [False, True, 0, "ssl", "yes", ["tls"]])
def test_security_outside_tls_starttls_none_is_refused_not_taken_for_tls(value: object) -> None:
    """``"ssl": false`` used to be read as TLS (``False or "tls"``); it names the field instead."""
    with pytest.raises(ValueError, match=r"config\.ssl"):
        config_from_channel(
            {"host": "imap.example.ru", "username": "u", "ssl": value}, {"password": "pw"}, today=TODAY
        )
