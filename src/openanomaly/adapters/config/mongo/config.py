"""The MongoDB store as SourcedPipelineStore, ModelRegistry and OutcomeStore."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import pymongo
from pydantic import ValidationError

from openanomaly.adapters.config.mongo.base import MongoBase, ident, upsert
from openanomaly.domain.records import ModelVersion
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import ConfigError, NotFound
from openanomaly.ports import JobOutcome

API_SOURCE = "api"
_VERSION_FIELDS = [f.name for f in dataclasses.fields(ModelVersion)]
_Ids = list[str]  # spelled here: inside the class, ``list`` is the method
_Versions = list[ModelVersion]


class MongoConfig(MongoBase):
    # -- PipelineStore -------------------------------------------------------------------------

    def list(self) -> list[Pipeline]:
        with self._use() as db:
            docs = list(db.pipelines.find({}, {"spec": 1}).sort("_id", pymongo.ASCENDING))
        return [_pipeline(d["_id"], d["spec"]) for d in docs]

    def get(self, pipeline_id: str) -> Pipeline:
        with self._use() as db:
            doc = db.pipelines.find_one({"_id": pipeline_id}, {"spec": 1})
        if doc is None:
            raise NotFound("pipeline", pipeline_id)
        return _pipeline(pipeline_id, doc["spec"])

    def put(self, pipeline: Pipeline) -> None:
        self._put(pipeline, API_SOURCE, self._clock())

    def delete(self, pipeline_id: str) -> None:
        with self._use() as db:
            if not db.pipelines.delete_one({"_id": pipeline_id}).deleted_count:
                raise NotFound("pipeline", pipeline_id)

    def replace_source(
        self, source: str, specs: Sequence[Pipeline], *, keep: Iterable[str] = ()
    ) -> _Ids:
        """As the SQL store's, but one write per pipeline (no multi-document transaction:
        a crash half-way leaves some written, and the next sync writes the rest)."""
        wanted = {p.id for p in specs} | set(keep)
        now = self._clock()
        for p in specs:
            self._put(p, source, now)
        with self._use() as db:
            ours = [d["_id"] for d in db.pipelines.find({"source": source}, {"_id": 1})]
            gone = sorted(set(ours) - wanted)
            if gone:
                db.pipelines.delete_many({"_id": {"$in": gone}, "source": source})
        return gone

    def _put(self, pipeline: Pipeline, source: str, now: float) -> None:
        doc = {"spec": pipeline.model_dump_json(), "updated_at": now, "source": source}
        with self._use() as db:
            upsert(db.pipelines.replace_one, {"_id": pipeline.id}, doc)

    # -- ModelRegistry -------------------------------------------------------------------------

    def record(self, version: ModelVersion, *, activate: bool = True) -> None:
        """Add ``version`` (a version recorded again is replaced and becomes the newest), then
        point the pipeline at it."""
        with self._use() as db:
            counter = upsert(
                db.counters.find_one_and_update,
                {"_id": "model_versions"},
                {"$inc": {"seq": 1}},
                return_document=pymongo.ReturnDocument.AFTER,
            )
            doc = dataclasses.asdict(version) | {"seq": counter["seq"]}
            upsert(
                db.model_versions.replace_one,
                {"_id": ident(version.pipeline_id, version.version)},
                doc,
            )
            if activate:
                self._set_active(db, version.pipeline_id, version.version)

    def active(self, pipeline_id: str) -> ModelVersion | None:
        with self._use() as db:
            pointer = db.active_models.find_one({"_id": pipeline_id})
            if pointer is None:
                return None
            doc = db.model_versions.find_one({"_id": ident(pipeline_id, pointer["version"])})
        return None if doc is None else _model_version(doc)

    def versions(self, pipeline_id: str) -> _Versions:
        with self._use() as db:
            docs = db.model_versions.find({"pipeline_id": pipeline_id})
            return [_model_version(d) for d in docs.sort("seq", pymongo.DESCENDING)]

    def activate(self, pipeline_id: str, version: str) -> None:
        with self._use() as db:
            if db.model_versions.find_one({"_id": ident(pipeline_id, version)}) is None:
                raise NotFound("model version", ident(pipeline_id, version))
            self._set_active(db, pipeline_id, version)

    @staticmethod
    def _set_active(db: Any, pipeline_id: str, version: str) -> None:
        upsert(db.active_models.replace_one, {"_id": pipeline_id}, {"version": version})

    # -- OutcomeStore --------------------------------------------------------------------------

    def record_outcome(self, pipeline_id: str, kind: str, at: float, error: str | None) -> None:
        values: dict[str, Any] = {"pipeline_id": pipeline_id, "kind": kind, "at": at}
        values["ok"] = error is None
        if error is not None:
            values |= {"error": error, "error_at": at}
        with self._use() as db:
            upsert(db.job_outcomes.update_one, {"_id": ident(pipeline_id, kind)}, {"$set": values})

    def outcomes(self, pipeline_id: str) -> dict[str, JobOutcome]:
        with self._use() as db:
            docs = list(db.job_outcomes.find({"pipeline_id": pipeline_id}))
        return {
            d["kind"]: JobOutcome(d["at"], bool(d["ok"]), d.get("error"), d.get("error_at"))
            for d in docs
        }


def _pipeline(pipeline_id: str, spec: str) -> Pipeline:
    try:
        return Pipeline.model_validate_json(spec)
    except ValidationError as exc:
        raise ConfigError(str(exc), where=f"stored pipeline {pipeline_id!r}") from None


def _model_version(doc: dict[str, Any]) -> ModelVersion:
    return ModelVersion(**{k: doc[k] for k in _VERSION_FIELDS})
