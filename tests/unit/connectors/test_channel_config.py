"""What an imap channel's config may say about transport security (``ssl``, ``smtp_ssl``)."""

from __future__ import annotations

import pytest

from services.connectors.outbound import mail_config_errors, mail_security

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("value", "mode"), [(None, "tls"), ("", "tls"), ("TLS", "tls"), ("none", "none")])
def test_known_security_values_and_the_default(value: object, mode: str) -> None:
    assert mail_security({"ssl": value}, "ssl") == mode


@pytest.mark.parametrize("value", [False, True, 1, "ssl", "off", {"tls": True}])
def test_other_values_are_named_errors(value: object) -> None:
    assert mail_config_errors("imap", {"ssl": value}) == {"config.ssl": "must be one of tls, starttls, none"}
    assert mail_config_errors("imap", {"smtp_ssl": value}) == {
        "config.smtp_ssl": "must be one of tls, starttls, none"
    }


def test_other_kinds_are_not_checked() -> None:
    assert mail_config_errors("form", {"ssl": False}) == {}
