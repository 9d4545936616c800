"""What every part of the SQL store stands on: the engine, one transaction per call, the
tables created on first use, and the portable upsert."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, ProgrammingError

from openanomaly.adapters.config.sql.engine import WRITE, create_engine, translated
from openanomaly.adapters.config.sql.schema import add_missing_columns, metadata
from openanomaly.errors import PipelineBusy
from openanomaly.ports import Clock


class SqlBase:
    """The engine and its transactions; the roles of ``SqlStore`` are mixins over it.

    Args:
        url: A SQLAlchemy URL: ``sqlite:///path/openanomaly.db``, ``postgresql+psycopg://...``.
        clock: Unix time for ``updated_at`` and leases.
        busy_timeout: Seconds a SQLite writer waits for another one to finish.
    """

    def __init__(
        self, url: str | sa.URL, *, clock: Clock = time.time, busy_timeout: float = 30.0
    ) -> None:
        self._clock = clock
        with translated("<unparsable URL>"):
            parsed = sa.make_url(url)
        self._shown = parsed.render_as_string(hide_password=True)
        with translated(self._shown):
            self.engine = create_engine(parsed, busy_timeout)
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        self.engine.dispose()

    @contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[sa.Connection]:
        with translated(self._shown):
            self._ensure_schema()
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE: True})
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
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                metadata.create_all(conn)
                add_missing_columns(conn)


def upsert(
    conn: sa.Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    """UPDATE, else INSERT, else (a concurrent writer inserted it meanwhile) UPDATE: portable,
    and correct under PostgreSQL's READ COMMITTED as under SQLite's single writer."""
    where = sa.and_(*(table.c[k] == v for k, v in key.items()))
    if conn.execute(table.update().where(where).values(values)).rowcount:
        return
    if not insert_new(conn, table, key | values):
        conn.execute(table.update().where(where).values(values))


def insert_new(conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless its key exists; False when it did (created by a concurrent writer:
    PostgreSQL lets two transactions miss the same row). The savepoint keeps the transaction
    usable after the failed INSERT."""
    try:
        with conn.begin_nested():
            conn.execute(table.insert().values(row))
    except IntegrityError:
        return False
    return True


def fence(conn: sa.Connection, leases: sa.Table, pipeline_id: str, owner: str) -> None:
    """Refuse to journal or commit for an owner that lost the lease (it expired and another
    process took it): that process now runs the windows.

    The lease row is locked (``FOR UPDATE``; SQLite's writer holds the whole file already)
    until the transaction ends, so a takeover waits for this commit instead of slipping in
    between the check and the write."""
    holder = conn.scalar(
        sa.select(leases.c.owner).where(leases.c.pipeline_id == pipeline_id).with_for_update()
    )
    if holder != owner:
        raise PipelineBusy(pipeline_id, holder)
