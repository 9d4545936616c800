"""``run --pipelines FILE``: the file is the truth for the pipelines that came from it.

The store keeps each pipeline's source (the API, or the file's path). Applying the file writes
its pipelines with the file as their source and deletes the file's pipelines that are no longer
in it; pipelines created through the API are not touched. The file is applied when the service
starts and again whenever it changes (checked at every read of the pipeline list, which the
scheduler does at each sync).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from openanomaly.adapters.config.yaml_file import load_pipeline_file
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import OpenAnomalyError
from openanomaly.ports import PipelineCheck, SourcedPipelineStore

log = logging.getLogger(__name__)

_Ids = list[str]  # spelled here: inside the store, ``list`` is the method
_MISSING = (-1, -1, -1)  # the stamp of a file that cannot be seen: logged once, not per sync


class FollowedFileStore:
    """A PipelineStore over ``inner`` that keeps the pipelines of ``path`` in step with it.

    A file that cannot be read or breaks the schema is logged and changes nothing (the stored
    pipelines run on); a pipeline that fails ``check`` is logged and not written, and its stored
    version, if any, is kept. Writes and deletes go to ``inner`` (as the API's).

    Args:
        inner: The store, which records sources.
        path: The file followed.
        check: What the schema cannot see (unknown engines...), as for ``validate``.
    """

    def __init__(
        self,
        inner: SourcedPipelineStore,
        path: str | os.PathLike[str],
        *,
        check: PipelineCheck | None = None,
    ) -> None:
        self.inner = inner
        self.path = Path(path)
        self._check = check
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def apply(self) -> _Ids:
        """Apply the file if it changed since the last time; returns the ids deleted."""
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                stamp = _MISSING  # load_pipeline_file says why, with the path
            if stamp == self._stamp:
                return []
            gone = self._apply()
            self._stamp = stamp
            return gone

    def _apply(self) -> _Ids:
        try:
            specs = load_pipeline_file(self.path)
        except OpenAnomalyError as exc:
            log.error("%s not applied, serving the stored pipelines:\n%s", self.path, exc)
            return []
        good = [p for p in specs if self._valid(p)]
        gone = self.inner.replace_source(str(self.path), good, keep=[p.id for p in specs])
        for pid in gone:
            log.info("deleted %s: no longer in %s", pid, self.path)
        log.info("applied %s: %s", self.path, ", ".join(p.id for p in good) or "no pipeline")
        return gone

    def _valid(self, p: Pipeline) -> bool:
        problems = [] if self._check is None else self._check(p)
        if problems:
            detail = "; ".join(f"{'.'.join(loc)}: {message}" for loc, message in problems)
            log.error("pipeline %s not applied: %s", p.id, detail)
        return not problems

    def list(self) -> list[Pipeline]:
        self.apply()
        return self.inner.list()

    def get(self, pipeline_id: str) -> Pipeline:
        return self.inner.get(pipeline_id)

    def put(self, pipeline: Pipeline) -> None:
        self.inner.put(pipeline)

    def delete(self, pipeline_id: str) -> None:
        self.inner.delete(pipeline_id)
