"""What every part of the MongoDB store stands on: the client, the one place where pymongo's
errors become ours, and the indexes created on first use."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymongo
from pymongo import errors as mongo_errors

from openanomaly.errors import ConfigError, OpenAnomalyError, StoreError, StoreUnavailable
from openanomaly.ports import Clock

ERRORS: tuple[tuple[type[Exception], type[OpenAnomalyError]], ...] = (
    # refused, timed out, no primary, a connection lost mid-call
    (mongo_errors.ConnectionFailure, StoreUnavailable),
    (mongo_errors.ConfigurationError, ConfigError),
    (mongo_errors.InvalidURI, ConfigError),
    (mongo_errors.PyMongoError, StoreError),
)
"""Library exception -> ours, first match wins."""


def shown(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class MongoBase:
    """The client and its database; the roles of ``MongoStore`` are mixins over it.

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
            name = database or database_name(url)
        self._db = self._client[name]
        self._indexes_ready = False
        self._indexes_lock = threading.Lock()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

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


def upsert(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``method(*args, upsert=True)``, once more when two writers upserted the same missing
    ``_id`` together and this one lost the insert: the retry finds the document and updates
    it (MongoDB retries such upserts itself in some cases, mongomock never)."""
    try:
        return method(*args, upsert=True, **kwargs)
    except mongo_errors.DuplicateKeyError:
        return method(*args, upsert=True, **kwargs)


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    return name or "openanomaly"


def ident(pipeline_id: str, name: str) -> str:
    return f"{pipeline_id}/{name}"
