"""The exception tree: every exception class defined in ``src/`` is an OpenAnomalyError and sits
in the drawing of ``errors.py``'s docstring under its own base class (parsed, not imported)."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import openanomaly
from openanomaly import errors

SRC = Path(openanomaly.__file__).parent
ROOT = "OpenAnomalyError"
BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def drawing(doc: str) -> dict[str, str | None]:
    """Class -> parent as drawn: ``├── Name`` lines, nested by their column."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        found = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z]\w*)(?:\s|$)", line)
        if found is None or not re.search(r"[├└]──|^\s*" + ROOT, line):
            continue
        column = len(line) - len(line.lstrip(" │├└─"))
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[found[2]] = stack[-1][1] if stack else None
        stack.append((column, found[2]))
    return parents


def exception_classes() -> dict[str, tuple[list[str], str]]:
    """Every class in ``src/`` that derives from an exception: name -> (base names, module)."""
    classes: dict[str, tuple[list[str], str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
                classes[node.name] = (bases, str(path.relative_to(SRC)))
    found: dict[str, tuple[list[str], str]] = {}
    changed = True
    while changed:
        changed = False
        for name, (bases, where) in classes.items():
            if name not in found and any(b in BUILTIN_EXCEPTIONS or b in found for b in bases):
                found[name] = (bases, where)
                changed = True
    return found


def test_the_drawing_parses() -> None:
    drawn = drawing(errors.__doc__ or "")
    assert drawn[ROOT] is None
    assert drawn["QueryError"] == "TsdbError" and drawn["TsdbError"] == ROOT
    assert drawn["RemoteUnavailable"] == "RemoteEngineError"


def test_every_exception_is_in_the_tree_and_in_the_drawing() -> None:
    drawn = drawing(errors.__doc__ or "")
    classes = exception_classes()
    assert len(classes) > 15
    problems = []
    for name, (bases, where) in sorted(classes.items()):
        if name == ROOT:
            continue
        if name not in drawn:
            problems.append(f"{name} ({where}) is not in the drawing of errors.py")
        elif drawn[name] not in bases:
            problems.append(f"{name} ({where}) is drawn under {drawn[name]}, derives from {bases}")
        if not any(b in classes and b not in BUILTIN_EXCEPTIONS for b in bases):
            problems.append(f"{name} ({where}) is not an {ROOT}: {bases}")
    problems += [f"{name} is drawn but defined nowhere" for name in set(drawn) - set(classes)]
    assert not problems, "\n".join(problems)


def test_a_class_missing_from_the_drawing_is_caught() -> None:
    drawn = drawing((errors.__doc__ or "").replace("│   └── StoreUnavailable", "│   └── Other"))
    assert "StoreUnavailable" not in drawn and drawn["Other"] == "StoreError"
