"""The SQL store's engine (SQLite tuned for several processes, PostgreSQL with a pinged pool)
and the one place where SQLAlchemy's and the drivers' errors become ours."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from openanomaly.errors import ConfigError, OpenAnomalyError, StoreError, StoreUnavailable

WRITE = "openanomaly_write"  # execution option: this transaction will write

ERRORS: tuple[tuple[type[Exception], type[OpenAnomalyError]], ...] = (
    # refused, timed out, a connection lost (a restarted server, a terminated backend),
    # "unable to open database file", "database is locked" past busy_timeout
    (sa.exc.OperationalError, StoreUnavailable),
    # any other driver error: "file is not a database" (a corrupt SQLite file), a bad schema...
    (sa.exc.DBAPIError, StoreError),
    # a malformed URL, or one naming a dialect or driver that is not installed
    (sa.exc.ArgumentError, ConfigError),
    (ModuleNotFoundError, ConfigError),
)
"""Library exception -> ours, first match wins (as httpx's ``map_httpcore_exceptions``)."""


@contextmanager
def translated(url: str) -> Iterator[None]:
    """Raise what ``ERRORS`` maps a library exception to; ``url`` is shown without password."""
    try:
        yield
    except tuple(t for t, _ in ERRORS) as exc:
        ours = next(ours for t, ours in ERRORS if isinstance(exc, t))
        # SQLAlchemy's text adds the statement and a link: the driver's message is what helps.
        orig = getattr(exc, "orig", None)
        lines = str(orig if orig is not None else exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        if issubclass(ours, StoreError):
            raise ours(f"database {url}: {reason}", store="database") from exc
        hint = ""
        if isinstance(exc, ModuleNotFoundError):
            hint = " (for PostgreSQL: pip install 'openanomaly[postgres]')"
        raise ConfigError(f"{url}: {reason}{hint}", where="database_url") from exc


def create_engine(url: sa.URL, busy_timeout: float) -> sa.Engine:
    if url.get_backend_name() != "sqlite":
        # pool_pre_ping: a connection the server dropped (a restart, a terminated backend) is
        # found at checkout and replaced, instead of failing a request; one lost in the middle
        # of a transaction fails that call (StoreUnavailable) and the pool drops it.
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
        write = conn.get_execution_options().get(WRITE, False)
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
