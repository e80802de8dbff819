"""The gateway spells some of the services' lists out as Literal types (for the OpenAPI enums);
they must not drift from the lists the services act on."""

from __future__ import annotations

from typing import get_args

from gateway.routes.analytics import ReportName
from gateway.routes.channels import ChannelKind
from services.analytics.main import REPORTS
from services.connectors.adapters import HOOK_KINDS


def test_channel_kinds_are_the_hook_kinds_and_imap() -> None:
    assert set(get_args(ChannelKind)) == {*HOOK_KINDS, "imap"}


def test_report_names_are_the_reports_the_service_builds() -> None:
    assert get_args(ReportName) == REPORTS
