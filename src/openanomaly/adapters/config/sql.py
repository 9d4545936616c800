"""Pipelines, model registry, checkpoints, leases and the window journal in a SQL database
(SQLAlchemy Core).

SQLite is the standalone default; PostgreSQL takes the same URL shape
(``postgresql+psycopg://user:pw@host/db``). The SQL is kept portable for that: JSON is stored
as text, upserts are an UPDATE then an INSERT (no dialect-specific ``ON CONFLICT``), times are
unix seconds.

Library errors stop here: ``ERRORS`` maps SQLAlchemy's (and the driver's) exceptions to
``StoreUnavailable``/``StoreError``, a bad URL or a missing driver to ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, ProgrammingError

from openanomaly.domain.records import ModelVersion, WindowState
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

_KEY = 255  # VARCHAR length for ids: indexable everywhere
API_SOURCE = "api"

metadata = sa.MetaData()

pipelines = sa.Table(
    "pipelines",
    metadata,
    sa.Column("id", sa.String(_KEY), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),  # Pipeline as JSON
    sa.Column("updated_at", sa.Double, nullable=False),
    # Who wrote it: "api" (the API, `pipelines apply`) or the path of the file `run --pipelines`
    # follows; the file's pipelines go when they leave the file, the API's stay.
    sa.Column("source", sa.String(_KEY), nullable=False, server_default=API_SOURCE),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    # Insertion order is "newest first" even when two versions share a created_at.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline_id", sa.String(_KEY), nullable=False),
    sa.Column("version", sa.String(_KEY), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("engine", sa.String(_KEY), nullable=False),
    sa.Column("model", sa.String(_KEY), nullable=False),
    sa.Column("spec_hash", sa.String(_KEY), nullable=False),
    sa.Column("series", sa.BigInteger, nullable=False),
    sa.Column("artifact", sa.Text, nullable=True),
    sa.Column("train_start", sa.BigInteger, nullable=False),
    sa.Column("train_end", sa.BigInteger, nullable=False),
    sa.Column("fit_seconds", sa.Double, nullable=False),
    sa.Column("extra", sa.Text, nullable=False),  # dict[str, str] as JSON
    sa.UniqueConstraint("pipeline_id", "version", name="uq_model_versions_pipeline_version"),
)

active_models = sa.Table(
    "active_models",
    metadata,
    sa.Column("pipeline_id", sa.String(_KEY), primary_key=True),
    sa.Column("version", sa.String(_KEY), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("pipeline_id", sa.String(_KEY), primary_key=True),
    sa.Column("last_end", sa.BigInteger, nullable=False),
)

# One row per pipeline being run: who runs its windows, until when (unix s). Taken and renewed
# by a conditional UPDATE (or INSERT when missing), so two processes cannot both hold it.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("pipeline_id", sa.String(_KEY), primary_key=True),
    sa.Column("owner", sa.String(_KEY), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
)

# The window being written, journalled before its first sample is sent and removed when the
# checkpoint moves past it: a row left here is a write that may have been interrupted.
window_journal = sa.Table(
    "window_journal",
    metadata,
    sa.Column("pipeline_id", sa.String(_KEY), primary_key=True),
    sa.Column("window_start", sa.BigInteger, nullable=False),
    sa.Column("window_end", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(_KEY), nullable=False),
    sa.Column("begun_at", sa.Double, nullable=False),
)
job_outcomes = sa.Table(
    "job_outcomes",
    metadata,
    sa.Column("pipeline_id", sa.String(_KEY), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_at", sa.Double, nullable=True),
)


ERRORS: tuple[tuple[type[Exception], type[OpenAnomalyError]], ...] = (
    # refused, timed out, "unable to open database file", "database is locked" past busy_timeout
    (sa.exc.OperationalError, StoreUnavailable),
    # any other driver error: "file is not a database" (a corrupt SQLite file), a bad schema...
    (sa.exc.DBAPIError, StoreError),
    # a malformed URL, or one naming a dialect or driver that is not installed
    (sa.exc.ArgumentError, ConfigError),
    (ModuleNotFoundError, ConfigError),
)
"""Library exception -> ours, first match wins (as httpx's ``map_httpcore_exceptions``)."""


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """Raise what ``ERRORS`` maps a library exception to; ``url`` is shown without password."""
    try:
        yield
    except tuple(t for t, _ in ERRORS) as exc:
        ours = next(ours for t, ours in ERRORS if isinstance(exc, t))
        # SQLAlchemy's text adds the statement and a link: the driver's message is what helps.
        orig = getattr(exc, "orig", None)
        reason = str(orig if orig is not None else exc).strip().splitlines()[0]
        if issubclass(ours, StoreError):
            raise ours(f"database {url}: {reason}", store="database") from exc
        hint = ""
        if isinstance(exc, ModuleNotFoundError):
            hint = " (for PostgreSQL: pip install 'openanomaly[postgres]')"
        raise ConfigError(f"{url}: {reason}{hint}", where="database_url") from exc


_VERSION_COLUMNS = [c for c in model_versions.c if c.name != "seq"]
_WRITE = "openanomaly_write"  # execution option: this transaction will write
_Versions = list[ModelVersion]  # spelled here: inside SqlStore, ``list`` is the method
_Ids = list[str]


class SqlStore:
    """PipelineStore, ModelRegistry, CheckpointStore and LeaseStore over one SQL database.

    Tables are created on first use. Every method runs in its own transaction on a pooled
    connection, so one instance is shared by the API and worker threads. With SQLite the file
    is put in WAL mode (readers do not block the writer) and writers wait up to
    ``busy_timeout`` seconds for the lock instead of failing at once; ``sqlite://`` (in memory)
    gives each thread its own database and suits single-threaded tests only.

    Model versions are not tied to the pipelines table: the registry also serves pipelines kept
    in a YAML file, and a deleted pipeline keeps its history.

    Args:
        url: A SQLAlchemy URL: ``sqlite:///path/openanomaly.db``, ``postgresql+psycopg://...``.
        clock: Unix time for ``updated_at``.
        busy_timeout: Seconds a SQLite writer waits for another one to finish.
    """

    def __init__(
        self, url: str | sa.URL, *, clock: Clock = time.time, busy_timeout: float = 30.0
    ) -> None:
        self._clock = clock
        with _translated("<unparsable URL>"):
            parsed = sa.make_url(url)
        self._shown = parsed.render_as_string(hide_password=True)
        with _translated(self._shown):
            self.engine = _create_engine(parsed, busy_timeout)
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        self.engine.dispose()

    # -- PipelineStore -------------------------------------------------------------------------

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
            _upsert(conn, pipelines, {"id": pipeline.id}, values)

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
                _upsert(conn, pipelines, {"id": p.id}, values)
            ours = conn.scalars(sa.select(pipelines.c.id).where(pipelines.c.source == source))
            gone = sorted(set(ours) - wanted)
            if gone:
                conn.execute(pipelines.delete().where(pipelines.c.id.in_(gone)))
        return gone

    # -- ModelRegistry -------------------------------------------------------------------------

    def record(self, version: ModelVersion, *, activate: bool = True) -> None:
        """Add ``version`` (and make it active) in one transaction.

        Recording a version the pipeline already has replaces it, and it becomes the newest: a
        retried train job refits the same window under the same version id.
        """
        row = dataclasses.asdict(version) | {"extra": json.dumps(version.extra, sort_keys=True)}
        same = model_versions.delete().where(
            model_versions.c.pipeline_id == version.pipeline_id,
            model_versions.c.version == version.version,
        )
        with self._tx(write=True) as conn:
            conn.execute(same)
            # False only when a concurrent retry of the same job recorded it first (PostgreSQL):
            # its row describes the same fit, so it stands.
            _insert_new(conn, model_versions, row)
            if activate:
                _set_active(conn, version.pipeline_id, version.version)

    def active(self, pipeline_id: str) -> ModelVersion | None:
        joined = model_versions.join(
            active_models,
            sa.and_(
                active_models.c.pipeline_id == model_versions.c.pipeline_id,
                active_models.c.version == model_versions.c.version,
            ),
        )
        query = (
            sa.select(*_VERSION_COLUMNS)
            .select_from(joined)
            .where(active_models.c.pipeline_id == pipeline_id)
        )
        with self._tx() as conn:
            row = conn.execute(query).first()
        return None if row is None else _model_version(row)

    def versions(self, pipeline_id: str) -> _Versions:
        query = (
            sa.select(*_VERSION_COLUMNS)
            .where(model_versions.c.pipeline_id == pipeline_id)
            .order_by(model_versions.c.seq.desc())
        )
        with self._tx() as conn:
            return [_model_version(row) for row in conn.execute(query)]

    def activate(self, pipeline_id: str, version: str) -> None:
        exists = sa.select(model_versions.c.seq).where(
            model_versions.c.pipeline_id == pipeline_id, model_versions.c.version == version
        )
        with self._tx(write=True) as conn:
            if conn.scalar(exists) is None:
                raise NotFound("model version", _ident(pipeline_id, version))
            _set_active(conn, pipeline_id, version)

    # -- CheckpointStore -----------------------------------------------------------------------

    def last_end(self, pipeline_id: str) -> int | None:
        query = sa.select(checkpoints.c.last_end).where(checkpoints.c.pipeline_id == pipeline_id)
        with self._tx() as conn:
            value = conn.scalar(query)
        return None if value is None else int(value)

    def begin(self, pipeline_id: str, start: int, end: int, *, owner: str | None = None) -> None:
        row = {"window_start": start, "window_end": end, "owner": owner or ""}
        with self._tx(write=True) as conn:
            if owner is not None:
                _fence(conn, pipeline_id, owner)
            _upsert(
                conn,
                window_journal,
                {"pipeline_id": pipeline_id},
                row | {"begun_at": self._clock()},
            )

    def advance(self, pipeline_id: str, end: int, *, owner: str | None = None) -> None:
        # The guard is in the UPDATE itself, so concurrent workers cannot move it backwards
        # between a read and a write.
        forward = (
            checkpoints.update()
            .where(checkpoints.c.pipeline_id == pipeline_id, checkpoints.c.last_end < end)
            .values(last_end=end)
        )
        exists = sa.select(checkpoints.c.last_end).where(checkpoints.c.pipeline_id == pipeline_id)
        done = window_journal.delete().where(
            window_journal.c.pipeline_id == pipeline_id, window_journal.c.window_end <= end
        )
        with self._tx(write=True) as conn:
            if owner is not None:
                _fence(conn, pipeline_id, owner)
            conn.execute(done)
            if conn.execute(forward).rowcount or conn.scalar(exists) is not None:
                return
            if not _insert_new(conn, checkpoints, {"pipeline_id": pipeline_id, "last_end": end}):
                conn.execute(forward)  # another writer created it meanwhile: move it if behind

    def state(self, pipeline_id: str) -> WindowState:
        journal = sa.select(window_journal.c.window_start, window_journal.c.window_end).where(
            window_journal.c.pipeline_id == pipeline_id
        )
        lease = sa.select(leases.c.owner, leases.c.expires_at).where(
            leases.c.pipeline_id == pipeline_id
        )
        checkpoint = sa.select(checkpoints.c.last_end).where(
            checkpoints.c.pipeline_id == pipeline_id
        )
        with self._tx() as conn:
            last_end = conn.scalar(checkpoint)
            pending = conn.execute(journal).first()
            held = conn.execute(lease).first()
        return WindowState(
            pipeline_id,
            last_end=None if last_end is None else int(last_end),
            pending=None if pending is None else (int(pending[0]), int(pending[1])),
            owner=None if held is None else str(held[0]),
            expires=None if held is None else float(held[1]),
        )

    # -- LeaseStore ----------------------------------------------------------------------------

    def acquire(
        self, pipeline_id: str, owner: str, ttl: float, *, replace: str | None = None
    ) -> bool:
        now = self._clock()
        takeable = [leases.c.owner == owner, leases.c.expires_at < now]
        if replace is not None:
            takeable.append(leases.c.owner == replace)
        take = (
            leases.update()
            .where(leases.c.pipeline_id == pipeline_id, sa.or_(*takeable))
            .values(owner=owner, expires_at=now + ttl)
        )
        row = {"pipeline_id": pipeline_id, "owner": owner, "expires_at": now + ttl}
        with self._tx(write=True) as conn:
            # Exactly one of two racing processes updates the row, or inserts the missing one.
            return bool(conn.execute(take).rowcount) or _insert_new(conn, leases, row)

    def release(self, pipeline_id: str, owner: str) -> None:
        mine = leases.delete().where(leases.c.pipeline_id == pipeline_id, leases.c.owner == owner)
        with self._tx(write=True) as conn:
            conn.execute(mine)

    # -- OutcomeStore --------------------------------------------------------------------------

    def record_outcome(self, pipeline_id: str, kind: str, at: float, error: str | None) -> None:
        values: dict[str, Any] = {"at": at, "ok": error is None}
        if error is not None:
            values |= {"error": error, "error_at": at}
        with self._tx(write=True) as conn:
            _upsert(conn, job_outcomes, {"pipeline_id": pipeline_id, "kind": kind}, values)

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

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[sa.Connection]:
        with _translated(self._shown):
            self._ensure_schema()
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    yield conn

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                self._create_tables()
            except (ProgrammingError, IntegrityError):
                # PostgreSQL: another process created them between our check and our CREATE;
                # the second pass sees them and creates nothing.
                self._create_tables()
            self._schema_ready = True

    def _create_tables(self) -> None:
        # A write transaction: on SQLite, processes starting together then create the tables
        # one after the other instead of each seeing them missing.
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                metadata.create_all(conn)
                _add_missing_columns(conn)


def _add_missing_columns(conn: sa.Connection) -> None:
    """Columns added since a table was first created (create_all skips existing tables)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("pipelines")}
    if "source" not in have:
        # A database from before sources: its pipelines were all written through the API.
        conn.exec_driver_sql(
            f"ALTER TABLE pipelines ADD COLUMN source VARCHAR({_KEY}) "
            f"NOT NULL DEFAULT '{API_SOURCE}'"
        )


def _create_engine(url: sa.URL, busy_timeout: float) -> sa.Engine:
    if url.get_backend_name() != "sqlite":
        # Reconnect transparently after a database restart instead of failing one request.
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url)
    busy_ms = int(busy_timeout * 1000)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below): pysqlite's own transaction handling skips BEGIN
        # before SELECT and SAVEPOINT, which breaks isolation and savepoints.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            _enable_wal(cursor, deadline=time.monotonic() + busy_timeout)
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A writer takes the write lock up front, waiting up to busy_timeout; upgrading a read
        # transaction later fails at once with "database is locked" when another writer won.
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enable_wal(cursor: Any, *, deadline: float) -> None:
    """Switch the file to WAL (persistent: a no-op once done). Switching needs the file to
    itself, and SQLite then answers "database is locked" at once, without its busy handler,
    e.g. when several processes start on a new file together. An in-memory database stays in
    its own mode (the pragma answers it instead of failing)."""
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _upsert(
    conn: sa.Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    where = sa.and_(*(table.c[k] == v for k, v in key.items()))
    if conn.execute(table.update().where(where).values(values)).rowcount:
        return
    if not _insert_new(conn, table, key | values):
        conn.execute(table.update().where(where).values(values))


def _insert_new(conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless its key exists; False when it did (created by a concurrent writer:
    PostgreSQL lets two transactions miss the same row). The savepoint keeps the transaction
    usable after the failed INSERT."""
    try:
        with conn.begin_nested():
            conn.execute(table.insert().values(row))
    except IntegrityError:
        return False
    return True


def _fence(conn: sa.Connection, pipeline_id: str, owner: str) -> None:
    """Refuse to journal or commit for an owner that lost the lease (it expired and another
    process took it): that process now runs the windows."""
    holder = conn.scalar(sa.select(leases.c.owner).where(leases.c.pipeline_id == pipeline_id))
    if holder != owner:
        raise PipelineBusy(pipeline_id, holder)


def _set_active(conn: sa.Connection, pipeline_id: str, version: str) -> None:
    _upsert(conn, active_models, {"pipeline_id": pipeline_id}, {"version": version})


def _pipeline(pipeline_id: str, spec: str) -> Pipeline:
    try:
        return Pipeline.model_validate_json(spec)
    except ValidationError as exc:
        # Written by an older release whose schema was looser: say which row, not just why.
        raise ConfigError(str(exc), where=f"stored pipeline {pipeline_id!r}") from None


def _model_version(row: sa.Row[Any]) -> ModelVersion:
    values = dict(row._mapping)
    values["extra"] = json.loads(values["extra"])
    return ModelVersion(**values)


def _ident(pipeline_id: str, version: str) -> str:
    return f"{pipeline_id}/{version}"
