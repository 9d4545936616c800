"""core/ imports only stdlib, numpy, pandas, pydantic (and itself): parsed, not imported."""

import ast
import sys
from pathlib import Path

import openanomaly.core

ALLOWED = {"numpy", "pandas", "pydantic", "openanomaly"}
CORE = Path(openanomaly.core.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_infrastructure() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 8
    bad = {
        f"{f.name}: {name}"
        for f in files
        for name in _imports(f)
        if name not in ALLOWED and name not in sys.stdlib_module_names
    }
    assert not bad, f"core/ imports infrastructure: {sorted(bad)}"


def test_core_openanomaly_imports_stay_in_core_or_errors() -> None:
    for f in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("openanomaly"):
                assert node.module.startswith(
                    ("openanomaly.core", "openanomaly.errors", "openanomaly.ports")
                ), (f.name, node.module)


def test_the_check_catches_a_leak(tmp_path: Path) -> None:
    leak = tmp_path / "leak.py"
    leak.write_text("import httpx\nfrom sqlalchemy import text\n")
    assert _imports(leak) - ALLOWED == {"httpx", "sqlalchemy"}
