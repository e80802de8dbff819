from __future__ import annotations

import pytest

from services.contacts.domain.timeline import merge_data

pytestmark = pytest.mark.unit


def test_late_ringing_never_undoes_a_final_status() -> None:
    assert merge_data({"status": "missed"}, {"status": "ringing"})["status"] == "missed"


def test_newer_final_verdict_replaces_the_old_one_with_its_own_duration() -> None:
    out = merge_data({"status": "answered", "duration_s": 125}, {"status": "missed"})
    assert out == {"status": "missed"}
    out = merge_data({"status": "answered", "duration_s": 125}, {"status": "missed", "duration_s": 0})
    assert out == {"status": "missed", "duration_s": 0}


def test_same_verdict_keeps_the_longest_duration_and_adds_the_recording() -> None:
    out = merge_data({"status": "answered", "duration_s": 30}, {"status": "answered", "duration_s": 125})
    assert out["duration_s"] == 125
    out = merge_data(out, {"recording_url": "https://r/1.mp3", "status": None})
    assert out == {"status": "answered", "duration_s": 125, "recording_url": "https://r/1.mp3"}
