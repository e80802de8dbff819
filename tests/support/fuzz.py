"""Hostile variations of documented payloads, for adapter fuzz tests."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any


def mutations(doc: Any, rnd: random.Random, rounds: int) -> Iterator[Any]:
    """Copies of ``doc`` with 1-3 values replaced by hostile ones (types, sizes, control chars)."""
    hostile = [None, True, 0, -1, 1.5, 10**30, "", "<script>", "\x00\x1b", "9" * 300, [], {}, [{}]]

    def paths(o: Any, p: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        yield p
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in items:
            yield from paths(v, (*p, k))

    for _ in range(rounds):
        d = copy.deepcopy(doc)
        for _ in range(rnd.randint(1, 3)):
            p = rnd.choice(list(paths(d)))
            if not p:
                continue
            cur = d
            for k in p[:-1]:
                cur = cur[k]
            cur[p[-1]] = copy.deepcopy(rnd.choice(hostile))
        yield d


def mutate_tree(
    obj: dict[str, Any], rng: random.Random, hostile: list[Any], descend: float = 0.5
) -> dict[str, Any]:
    """A copy of ``obj`` with 1-4 keys (at any depth) deleted or set to a hostile value."""
    clone: dict[str, Any] = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 4)):
        node = clone
        while node:
            key = rng.choice(list(node))
            if isinstance(node[key], dict) and node[key] and rng.random() < descend:
                node = node[key]
                continue
            if rng.random() < 0.2:
                del node[key]
            else:
                node[key] = rng.choice(hostile)
            break
    return clone
