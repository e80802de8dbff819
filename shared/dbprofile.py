"""Counts of the database commands a process sends, by database, command and collection.

A diagnostic for the benchmarks: with ``CRM_DB_PROFILE=<dir>`` set, every hub process counts the
commands its MongoDB client starts and writes them to ``<dir>/db-<pid>.json`` every second and when
it exits (a process ended by the stop watchdog runs no exit handlers), so a
run shows which service's handler costs how many round trips (``tests/perf/targets.py`` sums them
per hook). Off by default; nothing of a command's content is kept, only names and counts.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

from pymongo import monitoring


class CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        collection = target if isinstance(target, str) else "-"
        with self._lock:
            self.counts[f"{event.database_name}.{collection}.{event.command_name}"] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def dump(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"db-{os.getpid()}.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.snapshot(), indent=1))
        path.with_suffix(".tmp").replace(path)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_COUNTER: CommandCounter | None = None


def listeners() -> list[monitoring.CommandListener]:
    """The process's command counter when ``CRM_DB_PROFILE`` is set (one per process)."""
    global _COUNTER
    directory = os.environ.get("CRM_DB_PROFILE")
    if not directory:
        return []
    if _COUNTER is None:
        _COUNTER = CommandCounter()
        atexit.register(_COUNTER.dump, Path(directory))
        threading.Thread(target=_dump_every_second, args=(_COUNTER, Path(directory)), daemon=True).start()
    return [_COUNTER]


def _dump_every_second(counter: CommandCounter, directory: Path) -> None:
    while True:
        time.sleep(1)
        counter.dump(directory)
