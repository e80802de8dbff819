"""The analytics service's typed contract: the names of the reports it builds."""

from __future__ import annotations

from typing import Literal, get_args

ReportName = Literal[
    "funnel",
    "conversion",
    "cycle-time",
    "sources",
    "plan-vs-actual",
    "forecast",
    "ltv-cac",
    "activity",
    "response-time",
]
REPORTS: tuple[str, ...] = get_args(ReportName)
