"""Pipelines kept in a YAML file (GitOps): loading with errors that point at the line, and a
read-mostly PipelineStore over the file.

The file holds either a top-level ``pipelines:`` list or a bare list of pipelines.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from openanomaly.adapters.config._yaml_locate import Locator, Problem
from openanomaly.adapters.files import write_atomic
from openanomaly.domain.spec import Pipeline, PipelineFile
from openanomaly.errors import ConfigError, NotFound, StoreError

_Raw = list[Any]
"""The pipelines of a file as parsed from YAML, before validation."""


class PipelineFileError(ConfigError):
    """A pipeline file that cannot be used.

    Attributes:
        messages: One ``file:line: path: problem`` line per problem found, in file order.
    """

    def __init__(self, where: str, messages: list[str]) -> None:
        self.messages = messages
        # Each message already starts with the file name: do not let ConfigError prefix it.
        super().__init__("\n".join(messages))
        self.where = where


def load_pipeline_file(path: str | os.PathLike[str]) -> list[Pipeline]:
    """The pipelines of a YAML file, in file order.

    Raises:
        PipelineFileError: The file is missing, is not YAML, or breaks the schema; its
            ``messages`` list every problem with its line, e.g.
            ``pipelines.yaml:14: pipelines[1].scoring.interval: Input should be less than 1``.
    """
    return list(_parse(_read(Path(path)), str(path)).pipelines.values())


def validate_file(path: str | os.PathLike[str]) -> list[str]:
    """Every problem of a pipeline file as ``file:line: ...`` messages; empty when valid."""
    try:
        load_pipeline_file(path)
    except PipelineFileError as exc:
        return exc.messages
    return []


@dataclass
class _Document:
    """A parsed file: the pipelines in file order, and the raw items so that a rewrite keeps
    untouched pipelines as the user wrote them (``14d`` stays ``14d``, omitted defaults stay
    omitted)."""

    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    raw: _Raw = field(default_factory=list)
    bare: bool = False


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineFileError(str(path), [f"{path}: cannot read: {exc}"]) from None


def _parse(text: str, where: str) -> _Document:
    root, data = _compose(text, where)
    if root is None or data is None:
        return _Document()
    items, bare = _items(root, data, where)
    parsed = _validate(Locator(root, where, bare), {"pipelines": items} if bare else data)
    return _Document({p.id: p for p in parsed.pipelines}, list(items), bare)


def _items(root: yaml.Node, data: Any, where: str) -> tuple[Any, bool]:
    """The pipeline items (not yet checked to be a list) and whether the file is a bare list."""
    if isinstance(data, list):
        return data, True
    if not isinstance(data, dict):
        line = root.start_mark.line + 1
        message = f"{where}:{line}: expected a list of pipelines or a 'pipelines:' list"
        raise PipelineFileError(where, [message])
    if data.get("pipelines", ()) is None:
        data["pipelines"] = []  # 'pipelines:' with every entry commented out
    return data.get("pipelines", []), False


def _validate(locator: Locator, data: dict[str, Any]) -> PipelineFile:
    dup_ids = locator.duplicate_ids(data.get("pipelines"))
    problems: list[Problem] = locator.duplicate_keys() + dup_ids
    try:
        parsed = PipelineFile.model_validate(data)
    except ValidationError as exc:
        # PipelineFile's own file-level check is the duplicate-id rule, already reported above
        # with lines (and even when other errors stop pydantic from reaching it).
        errors = [e for e in exc.errors(include_url=False) if not (dup_ids and e["loc"] == ())]
        problems += [locator.schema_error(e) for e in errors]
    if problems:
        messages = [m for _, m in sorted(problems, key=lambda p: p[0])]
        raise PipelineFileError(locator.where, messages)
    return parsed


def _compose(text: str, where: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the plain data, from a single parse."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise PipelineFileError(where, [_syntax_message(exc, where)]) from None
    except yaml.YAMLError as exc:
        raise PipelineFileError(where, [f"{where}: {exc}"]) from None
    finally:
        loader.dispose()


def _syntax_message(exc: yaml.MarkedYAMLError, where: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context and exc.context_mark:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return f"{at}: {problem}"


class YamlPipelineStore:
    """PipelineStore over one YAML file, for GitOps: the file in the repository is the truth.

    ``list``/``get`` re-read the file when it changed (modification time, size or inode), so a
    ``git pull`` is picked up without a restart; a file broken by an edit makes them raise
    :class:`PipelineFileError` rather than serve a stale config. ``put``/``delete`` rewrite the
    whole file atomically and keep the other pipelines as written, but not YAML comments
    (PyYAML cannot keep them). A missing file is an empty store, created by the first ``put``.
    Thread-safe within a process; writers in several processes are not coordinated.

    Args:
        path: The YAML file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._doc = _Document()

    def list(self) -> list[Pipeline]:
        with self._lock:
            return sorted(self._load().pipelines.values(), key=lambda p: p.id)

    def get(self, pipeline_id: str) -> Pipeline:
        with self._lock:
            found = self._load().pipelines.get(pipeline_id)
        if found is None:
            raise NotFound("pipeline", pipeline_id)
        return found

    def put(self, pipeline: Pipeline) -> None:
        item = pipeline.model_dump(mode="json", exclude_defaults=True)
        with self._lock:
            doc = self._load()
            raw = list(doc.raw)
            ids = list(doc.pipelines)
            if pipeline.id in ids:
                raw[ids.index(pipeline.id)] = item
            else:
                raw.append(item)
            self._write(raw, doc.bare)

    def delete(self, pipeline_id: str) -> None:
        with self._lock:
            doc = self._load()
            if pipeline_id not in doc.pipelines:
                raise NotFound("pipeline", pipeline_id)
            ids = list(doc.pipelines)
            self._write(
                [r for r, i in zip(doc.raw, ids, strict=True) if i != pipeline_id], doc.bare
            )

    def _load(self) -> _Document:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._doc = None, _Document()
            return self._doc
        except OSError as exc:
            raise self._failed(exc) from exc
        # Stat before reading: a change racing with the read is then seen on the next call.
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._doc = _parse(_read(self.path), str(self.path))
            self._stamp = stamp
        return self._doc

    def _write(self, raw: _Raw, bare: bool) -> None:
        data = raw if bare else {"pipelines": raw}
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
        try:
            write_atomic(self.path, text.encode("utf-8"))
        except OSError as exc:
            raise self._failed(exc) from exc
        self._stamp = None  # the next read parses what was written, as any other change

    def _failed(self, exc: OSError) -> StoreError:
        # Reading errors are the file's problem (PipelineFileError, with the line); these are
        # the file system's: a directory that cannot be listed or written, a full disk.
        return StoreError(f"{self.path}: {exc.strerror or exc}", store="pipelines file")
