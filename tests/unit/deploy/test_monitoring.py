"""deploy/monitoring: the alert rules pass promtool (syntax and their own unit tests), and the
alerts and the Grafana dashboard name only metrics that hub processes export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.metrics import Metrics
from shared.metrics import ServiceMetrics

pytestmark = pytest.mark.unit

MONITORING = Path(__file__).resolve().parents[3] / "deploy" / "monitoring"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: scripts/test-services.sh installs Debian's prometheus"
    return subprocess.run([binary, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)


def exported() -> set[str]:
    names: set[str] = set()
    for registry in (Metrics().registry, ServiceMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(family.name + s for s in SUFFIXES)
    return names


def referenced(text: str) -> set[str]:
    return set(re.findall(r"\b(crm_[a-z_]+)", text))


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    check = promtool("check", "rules", "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alerts_and_dashboard_name_only_exported_metrics() -> None:
    names = exported()
    assert {"crm_consumer_queue_messages", "crm_outbox_backlog", "crm_dead_letters"} <= names
    alerts = referenced((MONITORING / "alerts.yml").read_text())
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    in_dashboard = set().union(*(referenced(e) for e in exprs))
    assert alerts and in_dashboard
    assert alerts <= names, alerts - names
    assert in_dashboard <= names, in_dashboard - names
    # what the issue asks to watch is on the dashboard: lag, outbox, dead letters, hook latency
    for metric in ("crm_consumer_queue_messages", "crm_outbox_backlog", "crm_dead_letters"):
        assert metric in in_dashboard
    assert "crm_hook_accept_seconds_bucket" in in_dashboard
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
