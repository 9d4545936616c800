"""The layers, parsed from the source (nothing is imported): each module imports only from its
own layer or those below it, and domain/ imports no infrastructure.

    errors <- domain <- ports <- services <- adapters | engines <- bootstrap <- entrypoints

Adapters and engines build on the ports and the domain only: they import neither the services
nor each other, and one adapter package (``adapters/prometheus``) does not reach into another
(``adapters/config``) except for the shared file helpers (``adapters/files.py``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import openanomaly

SRC = Path(openanomaly.__file__).parent

# Module prefix -> (rank, name). The longest matching prefix wins.
LAYERS: dict[str, tuple[int, str]] = {
    "openanomaly.errors": (0, "errors"),
    "openanomaly.domain": (1, "domain"),
    "openanomaly.synthetic": (1, "domain"),
    "openanomaly.quality": (1, "domain"),
    "openanomaly.ports": (2, "ports"),
    "openanomaly.services": (3, "services"),
    "openanomaly.adapters": (4, "adapters"),
    # Celery's app and tasks compose a worker process from its settings (bootstrap's role);
    # the worker command and its health server are an entrypoint.
    "openanomaly.adapters.celery": (5, "bootstrap"),
    "openanomaly.adapters.celery.worker": (6, "entrypoints"),
    "openanomaly.engines": (4, "engines"),
    "openanomaly.settings": (5, "bootstrap"),
    "openanomaly.bootstrap": (5, "bootstrap"),
    "openanomaly.engines.remote.server": (6, "entrypoints"),
    "openanomaly.cli": (6, "entrypoints"),
    "openanomaly.api": (6, "entrypoints"),
    "openanomaly.runner": (6, "entrypoints"),
    "openanomaly.plot": (6, "entrypoints"),
}
ROOT = "openanomaly"  # the package's ``__init__``: its version, importable from anywhere
DOMAIN_THIRD_PARTY = {"numpy", "pandas", "pydantic"}


def layer(module: str) -> tuple[int, str]:
    """The layer of ``module``; a module outside ``LAYERS`` is an error to fix here."""
    if module == ROOT:
        return (0, "errors")
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        found = LAYERS.get(".".join(parts[:n]))
        if found is not None:
            return found
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # ``from openanomaly.engines import builtin`` imports a module, not a name
            subs = {f"{module}.{a.name}" for a in node.names if _is_module(module, a.name)}
            names.update(subs if len(subs) == len(node.names) else {module})
    return names


def _is_module(package: str, name: str) -> bool:
    base = SRC.parent.joinpath(*package.split("."), name)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def violations(path: Path) -> list[str]:
    me = module_name(path)
    rank, name = layer(me)
    out = []
    for target in sorted(imports(path)):
        top = target.split(".")[0]
        if top != "openanomaly":
            if name == "domain" and top not in DOMAIN_THIRD_PARTY | sys.stdlib_module_names:
                out.append(f"{me} (domain) imports infrastructure: {target}")
            continue
        t_rank, t_name = layer(target)
        if t_rank > rank or (rank == 4 and not _peer_ok(me, target, t_rank)):
            out.append(f"{me} ({name}) imports {target} ({t_name})")
    return out


def _peer_ok(me: str, target: str, t_rank: int) -> bool:
    """What an adapter or an engine may import: below the services, or its own kind."""
    if t_rank < 3:
        return True
    mine, theirs = me.split("."), target.split(".")
    if mine[1] == "engines":
        return theirs[1] == "engines"
    return theirs[:3] == mine[:3] or target == "openanomaly.adapters.files"


def test_every_module_is_in_a_layer_and_imports_only_down() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40
    bad = [v for f in files for v in violations(f)]
    assert not bad, "imports that point up the layers:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("domain/leak.py", "import httpx\n", "imports infrastructure: httpx"),
        ("domain/leak.py", "from openanomaly.services import trainer\n", "(services)"),
        ("adapters/leak.py", "from openanomaly.engines.builtin import x\n", "(engines)"),
        ("engines/leak.py", "from ..adapters.prometheus import http\n", "(adapters)"),
        ("services/leak.py", "from openanomaly import bootstrap\n", "(bootstrap)"),
        ("adapters/leak.py", "from openanomaly.services import service\n", "(services)"),
        ("adapters/config/leak.py", "from ..artifacts import local\n", "(adapters)"),
    ],
)
def test_the_check_catches_a_leak(where: str, source: str, expected: str) -> None:
    path = SRC / where
    assert not path.exists()
    path.write_text(source)
    try:
        found = violations(path)
    finally:
        path.unlink()
    assert len(found) == 1, found
    assert expected in found[0]
