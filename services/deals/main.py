"""The deals service."""

from __future__ import annotations

from shared.service import Service


class DealsService(Service):
    name = "deals"
