"""Client-supplied objects stored as documents (a channel's ``config``, an interaction's ``data``,
``custom`` values): keys the database refuses or reads as operators are a 422 naming the field,
never a 500. A key may not hold a NUL byte, nor start with ``$`` or ``.``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

MAX_DEPTH = 32


def bad_key(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The dotted path of the first unstorable key in ``value`` (or a too-deep nesting), else None."""
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            where = f"{path}.{name}" if path else name
            if "\x00" in name or name.startswith(("$", ".")):
                return f"{where!r}: a key may not contain NUL or start with $ or ."
            found = bad_key(item, where, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = bad_key(item, f"{path}.{i}" if path else str(i), depth + 1)
            if found:
                return found
    return None


def _check(value: dict[str, Any]) -> dict[str, Any]:
    problem = bad_key(value)
    if problem:
        raise ValueError(problem)
    return value


StoredDict = Annotated[dict[str, Any], AfterValidator(_check)]
"""A ``dict`` field whose keys can be stored as they are."""
