"""Where a problem of a pipeline file is: pydantic ``loc`` tuples mapped to YAML lines, and the
words for each problem (unknown fields with a suggestion, duplicate keys and ids)."""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from openanomaly.domain.spec import PipelineFile

Loc = tuple[int | str, ...]
Problem = tuple[int, str]
"""(line, message): problems are sorted by line before they are reported."""


class Locator:
    """Finds the line of a pydantic ``loc`` in the YAML node tree and words the problems."""

    def __init__(self, root: yaml.Node, where: str, bare: bool) -> None:
        self.root, self.where, self.bare = root, where, bare

    def line(self, loc: Loc) -> int:
        """The line of the deepest node of ``loc`` present in the file (a missing field points
        at its parent); a mapping entry is reported at its key."""
        node, line = self.root, self.root.start_mark.line + 1
        for item in loc[1:] if self.bare else loc:  # a bare list stands for 'pipelines'
            found = _child(node, item)
            if found is None:
                break
            key, node = found
            line = key.start_mark.line + 1
        return line

    def schema_error(self, error: ErrorDetails) -> Problem:
        loc: Loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            message = _unknown_field(loc)
        else:
            message = error["msg"].removeprefix("Value error, ")
        return self._problem(loc, message)

    def duplicate_ids(self, items: Any) -> list[Problem]:
        first: dict[str, int] = {}
        problems = []
        for i, item in enumerate(items if isinstance(items, list) else []):
            pid = item.get("id") if isinstance(item, dict) else None
            if not isinstance(pid, str):
                continue
            loc: Loc = ("pipelines", i, "id")
            if pid in first:
                message = f"duplicate pipeline id {pid!r} (first at line {first[pid]})"
                problems.append(self._problem(loc, message))
            else:
                first[pid] = self.line(loc)
        return problems

    def duplicate_keys(self) -> list[Problem]:
        # PyYAML silently keeps the last of two equal keys; a doubled 'step:' would then be
        # ignored without a word, so it is reported like any other mistake.
        problems = []
        start: Loc = ("pipelines",) if self.bare else ()
        for node, loc in _mappings(self.root, start, set()):
            seen: dict[str, int] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                    continue
                if key.value in seen:
                    line = key.start_mark.line + 1
                    message = f"duplicate key {key.value!r} (first at line {seen[key.value]})"
                    problems.append((line, self._format(line, (*loc, key.value), message)))
                seen.setdefault(key.value, key.start_mark.line + 1)
        return problems

    def problem(self, loc: Loc, message: str) -> Problem:
        """A problem found past the schema (an unknown engine...), at the line of ``loc``."""
        return self._problem(loc, message)

    def _problem(self, loc: Loc, message: str) -> Problem:
        line = self.line(loc)
        return line, self._format(line, loc, message)

    def _format(self, line: int, loc: Loc, message: str) -> str:
        path = _format_loc(loc)
        return (
            f"{self.where}:{line}: {path}: {message}" if path else f"{self.where}:{line}: {message}"
        )


def _child(node: yaml.Node, item: int | str) -> tuple[yaml.Node, yaml.Node] | None:
    """(the node to report, the node to descend into) for one step of a ``loc``."""
    if isinstance(node, yaml.MappingNode):
        # The last equal key wins, as it does when PyYAML builds the data.
        matches = [(k, v) for k, v in node.value if getattr(k, "value", None) == str(item)]
        return matches[-1] if matches else None
    if isinstance(node, yaml.SequenceNode) and isinstance(item, int):
        return (node.value[item], node.value[item]) if 0 <= item < len(node.value) else None
    return None


def _mappings(node: yaml.Node, loc: Loc, seen: set[int]) -> Iterator[tuple[yaml.Node, Loc]]:
    if id(node) in seen:  # aliases share nodes and may even form cycles
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        yield node, loc
        for key, value in node.value:
            yield from _mappings(value, (*loc, str(getattr(key, "value", "?"))), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            yield from _mappings(value, (*loc, i), seen)


def _format_loc(loc: Loc) -> str:
    """``("pipelines", 1, "scoring", "interval")`` -> ``pipelines[1].scoring.interval``."""
    out = ""
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else f".{item}" if out else str(item)
    return out


def _unknown_field(loc: Loc) -> str:
    name = str(loc[-1]) if loc else "?"
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown field {name!r}"
    known = list(model.model_fields)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field {name!r} ({hint}allowed: {', '.join(known)})"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The spec model that holds the fields at ``loc`` (None below a free-form dict)."""
    model: type[BaseModel] = PipelineFile
    for item in loc:
        if isinstance(item, int):
            continue  # a list index: stay on the item type
        info = model.model_fields.get(item)
        inner = _model_in(info.annotation) if info else None
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, typing.get_args(annotation))), None)
