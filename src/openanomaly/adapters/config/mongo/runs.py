"""The MongoDB store as JobHistory: a document per job, listed newest first, pruned by age."""

from __future__ import annotations

import dataclasses
from typing import Any

import pymongo

from openanomaly.adapters.config.mongo.base import MongoBase, upsert
from openanomaly.domain.records import JobRun
from openanomaly.errors import NotFound

_RUN_FIELDS = [f.name for f in dataclasses.fields(JobRun)]
_Runs = list[JobRun]


class MongoRuns(MongoBase):
    # -- JobHistory ----------------------------------------------------------------------------

    def record_run(self, run: JobRun) -> None:
        doc = dataclasses.asdict(run)
        doc["listed_at"] = run.submitted_at or run.started_at or 0.0
        with self._use() as db:
            upsert(db.job_runs.replace_one, {"_id": run.job_id}, doc)

    def get_run(self, job_id: str) -> JobRun:
        with self._use() as db:
            doc = db.job_runs.find_one({"_id": job_id})
        if doc is None:
            raise NotFound("job", job_id)
        return _run(doc)

    def runs(
        self,
        *,
        pipeline_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> _Runs:
        wanted = {"pipeline_id": pipeline_id, "kind": kind, "status": status}
        query = {k: v for k, v in wanted.items() if v is not None}
        order = [("listed_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
        with self._use() as db:
            return [_run(d) for d in db.job_runs.find(query).sort(order).limit(limit)]

    def prune_runs(self, before: float) -> int:
        with self._use() as db:
            return int(db.job_runs.delete_many({"ended_at": {"$lt": before}}).deleted_count)


def _run(doc: dict[str, Any]) -> JobRun:
    values: dict[str, Any] = {k: doc.get(k) for k in _RUN_FIELDS}
    return JobRun(**(values | {"job_id": doc["_id"]}))
