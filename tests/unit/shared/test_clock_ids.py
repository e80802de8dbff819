"""Ids sort by the time they were made, and ``first_id_at`` is the floor of a moment's ids."""

from __future__ import annotations

import time

from shared.clock import first_id_at, new_id


def test_ids_made_after_a_moment_sort_after_its_first_id_and_earlier_ones_before() -> None:
    before = new_id()
    time.sleep(0.002)
    moment = time.time()
    after = [new_id() for _ in range(50)]
    floor = first_id_at(moment)
    assert len(floor) == 26
    assert before < floor
    assert all(floor <= i for i in after)
    assert first_id_at(moment - 1) < floor < first_id_at(moment + 1)
