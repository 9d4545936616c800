"""Pipelines, model registry, checkpoints, leases, the window journal, job outcomes and the run
history in a SQL database (SQLAlchemy Core), one module per role:

- ``schema``: the tables; ``engine``: SQLite/PostgreSQL engines and the error mapping;
  ``base``: transactions and the portable upsert;
- ``pipelines``, ``registry``, ``windows`` (checkpoints, journal, leases), ``outcomes``,
  ``runs`` (JobHistory): the roles, mixed into one ``SqlStore``.

SQLite is the standalone default; PostgreSQL takes the same URL shape
(``postgresql+psycopg://user:pw@host/db``). The SQL is kept portable for that: JSON is stored
as text, upserts are an UPDATE then an INSERT (no dialect-specific ``ON CONFLICT``), times are
unix seconds.

Library errors stop here: ``ERRORS`` maps SQLAlchemy's (and the driver's) exceptions to
``StoreUnavailable``/``StoreError``, a bad URL or a missing driver to ``ConfigError``.
"""

from __future__ import annotations

from openanomaly.adapters.config.sql.engine import ERRORS
from openanomaly.adapters.config.sql.outcomes import SqlOutcomes
from openanomaly.adapters.config.sql.pipelines import SqlPipelines
from openanomaly.adapters.config.sql.registry import SqlRegistry
from openanomaly.adapters.config.sql.runs import SqlRuns
from openanomaly.adapters.config.sql.schema import API_SOURCE, metadata
from openanomaly.adapters.config.sql.windows import SqlWindows

__all__ = ["API_SOURCE", "ERRORS", "SqlStore", "metadata"]


class SqlStore(SqlPipelines, SqlRegistry, SqlWindows, SqlOutcomes, SqlRuns):
    """SourcedPipelineStore, ModelRegistry, CheckpointStore, LeaseStore, OutcomeStore and
    JobHistory over one SQL database.

    Tables are created on first use. Every method runs in its own transaction on a pooled
    connection, so one instance is shared by the API and worker threads. With SQLite the file
    is put in WAL mode (readers do not block the writer) and writers wait up to
    ``busy_timeout`` seconds for the lock instead of failing at once; ``sqlite://`` (in memory)
    gives each thread its own database and suits single-threaded tests only. With PostgreSQL
    the pool pings a connection before handing it out, so a restarted server costs at most
    the calls that were running when it went (``StoreUnavailable``).

    Args:
        url: A SQLAlchemy URL: ``sqlite:///path/openanomaly.db``, ``postgresql+psycopg://...``.
        clock: Unix time for ``updated_at`` and leases.
        busy_timeout: Seconds a SQLite writer waits for another one to finish.
    """
