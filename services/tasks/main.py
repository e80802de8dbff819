"""The tasks service."""

from __future__ import annotations

from shared.service import Service


class TasksService(Service):
    name = "tasks"
