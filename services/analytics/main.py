"""The analytics service."""

from __future__ import annotations

from shared.service import Service


class AnalyticsService(Service):
    name = "analytics"
