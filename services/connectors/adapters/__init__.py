"""Inbound-hook adapters, one module per channel kind; each exposes ``ADAPTER``."""

from __future__ import annotations

import importlib
from functools import cache

from services.connectors.adapters.base import Adapter
from services.connectors.api import HOOK_KINDS

__all__ = ["HOOK_KINDS", "get_adapter"]


@cache
def get_adapter(kind: str) -> Adapter | None:
    """The adapter for ``kind``; ``None`` for kinds without hooks (imap) or not built yet."""
    if kind not in HOOK_KINDS:
        return None
    try:
        module = importlib.import_module(f"services.connectors.adapters.{kind}")
    except ModuleNotFoundError:
        return None
    return module.ADAPTER
