"""The SQL store as JobHistory: a row per job, listed newest first, pruned by age."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from openanomaly.adapters.config.sql.base import SqlBase, upsert
from openanomaly.adapters.config.sql.schema import job_runs
from openanomaly.domain.records import JobRun
from openanomaly.errors import NotFound

_RUN_COLUMNS = [job_runs.c[f.name] for f in dataclasses.fields(JobRun)]


class SqlRuns(SqlBase):
    def record_run(self, run: JobRun) -> None:
        values = dataclasses.asdict(run)
        key = {"job_id": values.pop("job_id")}
        values["listed_at"] = listed_at(run)
        with self._tx(write=True) as conn:
            upsert(conn, job_runs, key, values)

    def get_run(self, job_id: str) -> JobRun:
        query = sa.select(*_RUN_COLUMNS).where(job_runs.c.job_id == job_id)
        with self._tx() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound("job", job_id)
        return _run(row)

    def runs(
        self,
        *,
        pipeline_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[JobRun]:
        c = job_runs.c
        query = sa.select(*_RUN_COLUMNS)
        for column, wanted in ((c.pipeline_id, pipeline_id), (c.kind, kind), (c.status, status)):
            if wanted is not None:
                query = query.where(column == wanted)
        query = query.order_by(c.listed_at.desc(), c.job_id.desc()).limit(limit)
        with self._tx() as conn:
            return [_run(row) for row in conn.execute(query)]

    def prune_runs(self, before: float) -> int:
        old = job_runs.delete().where(job_runs.c.ended_at < before)
        with self._tx(write=True) as conn:
            return int(conn.execute(old).rowcount)


def listed_at(run: JobRun) -> float:
    """The time runs are listed by, newest first: submitted, else started (0: neither yet)."""
    return run.submitted_at or run.started_at or 0.0


def _run(row: sa.Row[Any]) -> JobRun:
    return JobRun(**row._mapping)
