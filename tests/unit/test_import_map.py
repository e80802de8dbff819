"""The package map holds (read from the source with ``ast``, nothing imported):

* ``shared/`` imports nothing from ``services/``, ``gateway/`` or the composition root;
* no service imports the gateway, and a service uses another service only through its
  ``api.py`` (the typed contract);
* the gateway uses a service only through its ``api.py``;
* the services' imports of each other have no cycle.

``services/common`` is the services' shared library (access rules), not a service. A package's
``__main__.py`` (``python -m services.contacts``) is an entrypoint: it belongs to the composition
root and may call it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = {"common"}
COMPOSITION_ROOT = "crm"


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name == "__main__.py":
            continue
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports_of(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """Every module name ``path`` imports (relative imports resolved against ``module``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # ``from services.contacts import api``
                yield node.lineno, f"{base}.{alias.name}"


def service_of(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "services" and parts[1] not in LIBRARY:
        return parts[1]
    return None


def is_contract(name: str) -> bool:
    """``services.<name>.api`` itself (or the package ``services.<name>`` named on the way to it)."""
    parts = name.split(".")
    return parts[0] == "services" and (len(parts) == 2 or (len(parts) == 3 and parts[2] == "api"))


def real_module(name: str) -> bool:
    """A name that is a module of this project (``from x import y`` also yields ``x.y`` for names
    that are functions or classes)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(package: str, allowed: object) -> list[str]:
    found: list[str] = []
    for module, path in modules(package):
        for line, name in imports_of(path, module):
            if real_module(name) and not allowed(module, name):  # type: ignore[operator]
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


def test_shared_imports_no_service_gateway_or_composition_root() -> None:
    def allowed(_module: str, name: str) -> bool:
        return name.split(".")[0] not in ("services", "gateway", COMPOSITION_ROOT)

    assert violations("shared", allowed) == []


def test_the_gateway_uses_a_service_only_through_its_contract() -> None:
    def allowed(_module: str, name: str) -> bool:
        return service_of(name) is None or is_contract(name)

    assert violations("gateway", allowed) == []


def test_a_service_imports_no_gateway_and_no_other_services_internals() -> None:
    def allowed(module: str, name: str) -> bool:
        if name.split(".")[0] in ("gateway", COMPOSITION_ROOT):
            return False
        own, other = service_of(module), service_of(name)
        return other is None or other == own or is_contract(name)

    assert violations("services", allowed) == []


def test_services_import_each_other_without_a_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for module, path in modules("services"):
        own = service_of(module)
        if own is None:
            continue
        for _, name in imports_of(path, module):
            other = service_of(name)
            if other is not None and other != own and real_module(name):
                edges.setdefault(own, set()).add(other)
    seen: set[str] = set()

    def walk(node: str, trail: list[str]) -> None:
        assert node not in trail, f"import cycle: {' -> '.join([*trail, node])}"
        if node in seen:
            return
        for nxt in sorted(edges.get(node, ())):
            walk(nxt, [*trail, node])
        seen.add(node)

    for start in sorted(edges):
        walk(start, [])


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The walk itself works: a relative and an absolute import are both found."""
    pkg = tmp_path / "services" / "demo"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("from ..contacts import store\nimport gateway.app\n")
    names = {n for _, n in imports_of(pkg / "x.py", "services.demo.x")}
    assert {"services.contacts.store", "gateway.app"} <= names
