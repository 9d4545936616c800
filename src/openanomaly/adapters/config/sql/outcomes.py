"""The SQL store as OutcomeStore: how each pipeline's last train and infer ended."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from openanomaly.adapters.config.sql.base import SqlBase, upsert
from openanomaly.adapters.config.sql.schema import job_outcomes
from openanomaly.ports import JobOutcome


class SqlOutcomes(SqlBase):
    def record_outcome(self, pipeline_id: str, kind: str, at: float, error: str | None) -> None:
        values: dict[str, Any] = {"at": at, "ok": error is None}
        if error is not None:
            values |= {"error": error, "error_at": at}
        with self._tx(write=True) as conn:
            upsert(conn, job_outcomes, {"pipeline_id": pipeline_id, "kind": kind}, values)

    def outcomes(self, pipeline_id: str) -> dict[str, JobOutcome]:
        c = job_outcomes.c
        query = sa.select(c.kind, c.at, c.ok, c.error, c.error_at).where(
            c.pipeline_id == pipeline_id
        )
        with self._tx() as conn:
            rows = conn.execute(query).all()
        return {
            kind: JobOutcome(at, bool(ok), error, error_at)
            for kind, at, ok, error, error_at in rows
        }
