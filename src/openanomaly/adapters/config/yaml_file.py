"""Pipelines kept in a YAML file (GitOps): loading with errors that point at the line, and a
read-only PipelineStore over the file.

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
from openanomaly.domain.spec import Pipeline, PipelineFile
from openanomaly.errors import ConfigError, Conflict, NotFound, OpenAnomalyError, StoreError
from openanomaly.ports import PipelineCheck


class ReadOnlyFile(Conflict):
    """A write to pipelines kept in a GitOps file: they are changed in the file, not here."""

    def __init__(self, path: Path, pipeline_id: str) -> None:
        self.path = path
        OpenAnomalyError.__init__(
            self,
            f"pipelines are kept in {path} (config_store=yaml): change pipeline "
            f"{pipeline_id!r} in that file, not through OpenAnomaly",
        )
        self.kind, self.ident = "pipeline", pipeline_id


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


def load_pipeline_file(
    path: str | os.PathLike[str], *, check: PipelineCheck | None = None
) -> list[Pipeline]:
    """The pipelines of a YAML file, in file order; ``check`` finds what the schema cannot
    (unknown engines and parameters, bad cron...), reported with lines like schema errors.

    Raises:
        PipelineFileError: The file is missing, is not YAML, or breaks the schema; its
            ``messages`` list every problem with its line, e.g.
            ``pipelines.yaml:14: pipelines[1].scoring.interval: Input should be less than 1``.
    """
    return list(_parse(_read(Path(path)), str(path), check).pipelines.values())


def validate_file(path: str | os.PathLike[str], *, check: PipelineCheck | None = None) -> list[str]:
    """Every problem of a pipeline file as ``file:line: ...`` messages; empty when valid."""
    try:
        load_pipeline_file(path, check=check)
    except PipelineFileError as exc:
        return exc.messages
    return []


@dataclass
class _Document:
    """A parsed file: the pipelines in file order."""

    pipelines: dict[str, Pipeline] = field(default_factory=dict)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineFileError(str(path), [f"{path}: cannot read: {exc}"]) from None


def _parse(text: str, where: str, check: PipelineCheck | None = None) -> _Document:
    root, data = _compose(text, where)
    if root is None or data is None:
        return _Document()
    items, bare = _items(root, data, where)
    parsed = _validate(Locator(root, where, bare), {"pipelines": items} if bare else data, check)
    return _Document({p.id: p for p in parsed.pipelines})


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


def _validate(
    locator: Locator, data: dict[str, Any], check: PipelineCheck | None = None
) -> PipelineFile:
    dup_ids = locator.duplicate_ids(data.get("pipelines"))
    problems: list[Problem] = locator.duplicate_keys() + dup_ids
    try:
        parsed = PipelineFile.model_validate(data)
    except ValidationError as exc:
        # PipelineFile's own file-level check is the duplicate-id rule, already reported above
        # with lines (and even when other errors stop pydantic from reaching it).
        errors = [e for e in exc.errors(include_url=False) if not (dup_ids and e["loc"] == ())]
        problems += [locator.schema_error(e) for e in errors]
    else:
        problems += _checked(locator, parsed, check) if check is not None else []
    if problems:
        messages = [m for _, m in sorted(problems, key=lambda p: p[0])]
        raise PipelineFileError(locator.where, messages)
    return parsed


def _checked(locator: Locator, parsed: PipelineFile, check: PipelineCheck) -> list[Problem]:
    return [
        locator.problem(("pipelines", i, *loc), message)
        for i, pipeline in enumerate(parsed.pipelines)
        for loc, message in check(pipeline)
    ]


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
    :class:`PipelineFileError` rather than serve a stale config. The file is read-only to
    OpenAnomaly: ``put``/``delete`` raise :class:`ReadOnlyFile` naming it (a rewrite would lose
    the user's comments and layout, and the next commit would undo it anyway). A missing file is
    an empty store. Thread-safe.

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
        raise ReadOnlyFile(self.path, pipeline.id)

    def delete(self, pipeline_id: str) -> None:
        self.get(pipeline_id)  # an unknown id is NotFound, as in every store
        raise ReadOnlyFile(self.path, pipeline_id)

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

    def _failed(self, exc: OSError) -> StoreError:
        # Reading errors are the file's problem (PipelineFileError, with the line); these are
        # the file system's: a directory that cannot be listed or written, a full disk.
        return StoreError(f"{self.path}: {exc.strerror or exc}", store="pipelines file")
