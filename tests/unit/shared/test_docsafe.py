"""Keys the database refuses or reads as operators, and runaway nesting, are named, not stored."""

from __future__ import annotations

import pytest

from shared.docsafe import bad_key


@pytest.mark.parametrize("doc", [{"a\x00b": 1}, {"$where": 1}, {".x": 1}, {"ok": {"in": [{"$gt": 1}]}}])
def test_unstorable_keys_are_found_with_their_path(doc: dict) -> None:  # type: ignore[type-arg]
    assert bad_key(doc)


def test_plain_documents_pass_and_deep_ones_do_not() -> None:
    assert bad_key({"utm": {"source": "vk"}, "list": [1, {"a.b": 2}], "emoji": "✓"}) is None
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    assert bad_key({"x": deep}) == "nested deeper than 32 levels"
