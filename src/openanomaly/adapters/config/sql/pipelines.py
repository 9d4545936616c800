"""The SQL store as PipelineStore and SourcedPipelineStore."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from pydantic import ValidationError

from openanomaly.adapters.config.sql.base import SqlBase, upsert
from openanomaly.adapters.config.sql.schema import API_SOURCE, pipelines
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import ConfigError, NotFound

_Ids = list[str]  # spelled here: inside the class, ``list`` is the method


class SqlPipelines(SqlBase):
    def list(self) -> list[Pipeline]:
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(pipelines.c.id, pipelines.c.spec).order_by(pipelines.c.id)
            )
            return [_pipeline(pid, spec) for pid, spec in rows]

    def get(self, pipeline_id: str) -> Pipeline:
        with self._tx() as conn:
            spec = conn.scalar(sa.select(pipelines.c.spec).where(pipelines.c.id == pipeline_id))
        if spec is None:
            raise NotFound("pipeline", pipeline_id)
        return _pipeline(pipeline_id, spec)

    def put(self, pipeline: Pipeline) -> None:
        values = {
            "spec": pipeline.model_dump_json(),
            "updated_at": self._clock(),
            "source": API_SOURCE,
        }
        with self._tx(write=True) as conn:
            upsert(conn, pipelines, {"id": pipeline.id}, values)

    def delete(self, pipeline_id: str) -> None:
        with self._tx(write=True) as conn:
            gone = conn.execute(pipelines.delete().where(pipelines.c.id == pipeline_id))
            if not gone.rowcount:
                raise NotFound("pipeline", pipeline_id)

    def replace_source(
        self, source: str, specs: Sequence[Pipeline], *, keep: Iterable[str] = ()
    ) -> _Ids:
        """Make ``specs`` the pipelines of ``source`` (a file's path), in one transaction:
        each is written with that source, and the others of that source are deleted unless
        their id is in ``keep``. Pipelines of other sources are not touched, unless one of
        ``specs`` has their id (it then comes from ``source``). Returns the deleted ids."""
        wanted = {p.id for p in specs} | set(keep)
        now = self._clock()
        with self._tx(write=True) as conn:
            for p in specs:
                values = {"spec": p.model_dump_json(), "updated_at": now, "source": source}
                upsert(conn, pipelines, {"id": p.id}, values)
            ours = conn.scalars(sa.select(pipelines.c.id).where(pipelines.c.source == source))
            gone = sorted(set(ours) - wanted)
            if gone:
                conn.execute(pipelines.delete().where(pipelines.c.id.in_(gone)))
        return gone


def _pipeline(pipeline_id: str, spec: str) -> Pipeline:
    try:
        return Pipeline.model_validate_json(spec)
    except ValidationError as exc:
        # Written by an older release whose schema was looser: say which row, not just why.
        raise ConfigError(str(exc), where=f"stored pipeline {pipeline_id!r}") from None
