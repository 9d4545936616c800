"""Pipelines, model registry, checkpoints, leases, the window journal, job outcomes and the run
history in MongoDB (pymongo): every role the SQL store plays, for ``config_store=mongo``.

MongoDB gives atomicity per document, so what must be atomic lives in one document: a
pipeline's lease, checkpoint and journalled window are the fields of its ``windows`` document,
and every fenced write is a single ``update_one``/``find_one_and_update`` whose filter names
the owner (a process that lost the lease matches nothing and writes nothing). A lease is taken
by an upsert on the pipeline's id: of two racing processes one updates or inserts, the other's
insert hits the unique ``_id`` (``DuplicateKeyError``) and it gets False.

Tested against mongomock only (no MongoDB server can be had where it was written).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymongo
from pydantic import ValidationError
from pymongo import errors as mongo_errors

from openanomaly.domain.records import JobRun, ModelVersion, WindowState
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import (
    ConfigError,
    NotFound,
    OpenAnomalyError,
    PipelineBusy,
    StoreError,
    StoreUnavailable,
)
from openanomaly.ports import Clock, JobOutcome

API_SOURCE = "api"
_RUN_FIELDS = [f.name for f in dataclasses.fields(JobRun)]
_VERSION_FIELDS = [f.name for f in dataclasses.fields(ModelVersion)]

ERRORS: tuple[tuple[type[Exception], type[OpenAnomalyError]], ...] = (
    # refused, timed out, no primary, a connection lost mid-call
    (mongo_errors.ConnectionFailure, StoreUnavailable),
    (mongo_errors.ConfigurationError, ConfigError),
    (mongo_errors.InvalidURI, ConfigError),
    (mongo_errors.PyMongoError, StoreError),
)
"""Library exception -> ours, first match wins."""

_Ids = list[str]  # spelled here: inside MongoStore, ``list`` is the method
_Versions = list[ModelVersion]
_Runs = list[JobRun]


def shown(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class MongoStore:
    """SourcedPipelineStore, ModelRegistry, CheckpointStore, LeaseStore, OutcomeStore and
    JobHistory over one MongoDB database.

    Args:
        url: ``mongodb://user:pw@host/db`` (the database defaults to ``openanomaly``).
        client: A ``pymongo.MongoClient`` (or ``mongomock.MongoClient``) to use instead.
        database: The database name, overriding the URL's.
        clock: Unix time for ``updated_at`` and leases.
    """

    def __init__(
        self,
        url: str = "mongodb://localhost/openanomaly",
        *,
        client: Any | None = None,
        database: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._shown = shown(url)
        self._clock = clock
        self._own_client = client is None
        with self._translated():
            self._client = client or pymongo.MongoClient(
                url, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000
            )
            name = database or _database_name(url)
        self._db = self._client[name]
        self._indexes_ready = False
        self._indexes_lock = threading.Lock()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

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
            db.pipelines.replace_one({"_id": pipeline.id}, doc, upsert=True)

    # -- ModelRegistry -------------------------------------------------------------------------

    def record(self, version: ModelVersion, *, activate: bool = True) -> None:
        """Add ``version`` (a version recorded again is replaced and becomes the newest), then
        point the pipeline at it."""
        with self._use() as db:
            counter = db.counters.find_one_and_update(
                {"_id": "model_versions"},
                {"$inc": {"seq": 1}},
                upsert=True,
                return_document=pymongo.ReturnDocument.AFTER,
            )
            doc = dataclasses.asdict(version) | {"seq": counter["seq"]}
            db.model_versions.replace_one(
                {"_id": _ident(version.pipeline_id, version.version)}, doc, upsert=True
            )
            if activate:
                self._set_active(db, version.pipeline_id, version.version)

    def active(self, pipeline_id: str) -> ModelVersion | None:
        with self._use() as db:
            pointer = db.active_models.find_one({"_id": pipeline_id})
            if pointer is None:
                return None
            doc = db.model_versions.find_one({"_id": _ident(pipeline_id, pointer["version"])})
        return None if doc is None else _model_version(doc)

    def versions(self, pipeline_id: str) -> _Versions:
        with self._use() as db:
            docs = db.model_versions.find({"pipeline_id": pipeline_id})
            return [_model_version(d) for d in docs.sort("seq", pymongo.DESCENDING)]

    def activate(self, pipeline_id: str, version: str) -> None:
        with self._use() as db:
            if db.model_versions.find_one({"_id": _ident(pipeline_id, version)}) is None:
                raise NotFound("model version", _ident(pipeline_id, version))
            self._set_active(db, pipeline_id, version)

    @staticmethod
    def _set_active(db: Any, pipeline_id: str, version: str) -> None:
        db.active_models.replace_one({"_id": pipeline_id}, {"version": version}, upsert=True)

    # -- CheckpointStore -----------------------------------------------------------------------

    def last_end(self, pipeline_id: str) -> int | None:
        return self.state(pipeline_id).last_end

    def begin(self, pipeline_id: str, start: int, end: int, *, owner: str | None = None) -> None:
        journal = {"pending": [start, end], "journal_owner": owner or "", "begun_at": self._clock()}
        with self._use() as db:
            if owner is None:
                db.windows.update_one({"_id": pipeline_id}, {"$set": journal}, upsert=True)
            elif not db.windows.update_one(
                {"_id": pipeline_id, "owner": owner}, {"$set": journal}
            ).matched_count:
                raise PipelineBusy(pipeline_id, self.state(pipeline_id).owner)

    def advance(self, pipeline_id: str, end: int, *, owner: str | None = None) -> None:
        mine: dict[str, Any] = {"_id": pipeline_id}
        with self._use() as db:
            if owner is None:
                db.windows.update_one(mine, {"$max": {"last_end": end}}, upsert=True)
            else:
                mine["owner"] = owner
                # Fenced and atomic: the checkpoint moves only while ``owner`` holds the lease.
                if not db.windows.update_one(mine, {"$max": {"last_end": end}}).matched_count:
                    raise PipelineBusy(pipeline_id, self.state(pipeline_id).owner)
            done = mine | {"pending.1": {"$lte": end}}
            db.windows.update_one(done, {"$unset": {"pending": "", "journal_owner": ""}})

    def state(self, pipeline_id: str) -> WindowState:
        with self._use() as db:
            doc = db.windows.find_one({"_id": pipeline_id}) or {}
        pending = doc.get("pending")
        return WindowState(
            pipeline_id,
            last_end=None if doc.get("last_end") is None else int(doc["last_end"]),
            pending=None if pending is None else (int(pending[0]), int(pending[1])),
            owner=doc.get("owner"),
            expires=None if doc.get("expires_at") is None else float(doc["expires_at"]),
        )

    # -- LeaseStore ----------------------------------------------------------------------------

    def acquire(
        self, pipeline_id: str, owner: str, ttl: float, *, replace: str | None = None
    ) -> bool:
        now = self._clock()
        takeable: list[dict[str, Any]] = [
            {"owner": owner},
            {"owner": None},  # free: never held, or released
            {"expires_at": {"$lt": now}},
        ]
        if replace is not None:
            takeable.append({"owner": replace})
        try:
            with self._use() as db:
                db.windows.find_one_and_update(
                    {"_id": pipeline_id, "$or": takeable},
                    {"$set": {"owner": owner, "expires_at": now + ttl}},
                    upsert=True,
                )
        except StoreError as exc:
            # The filter missed an existing document (held by another): the upsert's insert
            # collides with its _id. Of two racers, one takes it, the other lands here.
            if isinstance(exc.__cause__, mongo_errors.DuplicateKeyError):
                return False
            raise
        return True

    def release(self, pipeline_id: str, owner: str) -> None:
        with self._use() as db:
            db.windows.update_one(
                {"_id": pipeline_id, "owner": owner}, {"$unset": {"owner": "", "expires_at": ""}}
            )

    # -- OutcomeStore --------------------------------------------------------------------------

    def record_outcome(self, pipeline_id: str, kind: str, at: float, error: str | None) -> None:
        values: dict[str, Any] = {"pipeline_id": pipeline_id, "kind": kind, "at": at}
        values["ok"] = error is None
        if error is not None:
            values |= {"error": error, "error_at": at}
        with self._use() as db:
            db.job_outcomes.update_one(
                {"_id": _ident(pipeline_id, kind)}, {"$set": values}, upsert=True
            )

    def outcomes(self, pipeline_id: str) -> dict[str, JobOutcome]:
        with self._use() as db:
            docs = list(db.job_outcomes.find({"pipeline_id": pipeline_id}))
        return {
            d["kind"]: JobOutcome(d["at"], bool(d["ok"]), d.get("error"), d.get("error_at"))
            for d in docs
        }

    # -- JobHistory ----------------------------------------------------------------------------

    def record_run(self, run: JobRun) -> None:
        doc = dataclasses.asdict(run)
        doc["listed_at"] = run.submitted_at or run.started_at or 0.0
        with self._use() as db:
            db.job_runs.replace_one({"_id": run.job_id}, doc, upsert=True)

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

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _use(self) -> Iterator[Any]:
        with self._translated():
            self._ensure_indexes()
            yield self._db

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except tuple(t for t, _ in ERRORS) as exc:
            ours = next(ours for t, ours in ERRORS if isinstance(exc, t))
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if issubclass(ours, StoreError):
                raise ours(f"database {self._shown}: {reason}", store="database") from exc
            raise ConfigError(f"{self._shown}: {reason}", where="database_url") from exc

    def _ensure_indexes(self) -> None:
        if self._indexes_ready:
            return
        with self._indexes_lock:
            if self._indexes_ready:
                return
            db = self._db
            db.pipelines.create_index("source")
            db.model_versions.create_index([("pipeline_id", 1), ("seq", -1)])
            db.job_outcomes.create_index("pipeline_id")
            newest = [("listed_at", -1), ("_id", -1)]
            db.job_runs.create_index(newest)
            for field in ("pipeline_id", "kind", "status"):
                db.job_runs.create_index([(field, 1), *newest])
            db.job_runs.create_index("ended_at")
            self._indexes_ready = True


def _database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    return name or "openanomaly"


def _ident(pipeline_id: str, name: str) -> str:
    return f"{pipeline_id}/{name}"


def _pipeline(pipeline_id: str, spec: str) -> Pipeline:
    try:
        return Pipeline.model_validate_json(spec)
    except ValidationError as exc:
        raise ConfigError(str(exc), where=f"stored pipeline {pipeline_id!r}") from None


def _model_version(doc: dict[str, Any]) -> ModelVersion:
    return ModelVersion(**{k: doc[k] for k in _VERSION_FIELDS})


def _run(doc: dict[str, Any]) -> JobRun:
    values: dict[str, Any] = {k: doc.get(k) for k in _RUN_FIELDS}
    return JobRun(**(values | {"job_id": doc["_id"]}))
