"""One exception tree for OpenAnomaly. Adapters translate library errors into it; the API maps
it to HTTP status codes in one place (``api/errors.py``); the CLI prints ``str(exc)``. Every
exception class of the package is drawn here (a unit test compares the drawing with the code);
the few defined next to the adapter or engine that raises them say where.

    OpenAnomalyError
    ├── ConfigError             bad settings or pipeline spec (carries where: file, line, field)
    │   └── PipelineFileError   a pipelines file that cannot be used (adapters/config/yaml_file)
    ├── NotFound                no such pipeline / model version / artifact
    ├── Conflict                already exists
    │   └── ReadOnlyFile        a GitOps file written through OpenAnomaly (config/yaml_file)
    ├── PipelineBusy            another process holds the pipeline's lease
    ├── StoreError              a pipeline, registry or artifact store failed (carries which)
    │   └── StoreUnavailable    the database cannot be reached or opened (down, refused, locked)
    ├── TsdbError               talking to the TSDB failed
    │   ├── QueryError          the TSDB refused the query (bad PromQL...): its own message
    │   │   └── TooManySeries   the answer holds more series than tsdb.max_series
    │   ├── TsdbUnavailable     connection refused, timeout, 5xx/429 after retries
    │   ├── WriteRejected       remote write refused with a 4xx (not retried)
    │   └── WriteUncertain      a remote write broke off after sending: outcome unknown
    ├── NoData                  the query returned no series in the range
    ├── EngineError             a model engine failed
    │   ├── NotEnoughHistory    too little data to fit on; the current model is kept
    │   ├── EngineNotInstalled  the optional extra is missing (names it)
    │   ├── EngineUnavailable   a service behind the engine (model server) is down
    │   ├── UnknownModel        no such engine/model name (lists the known ones)
    │   ├── RemoteEngineError   the model server refused a call (engines/remote/client)
    │   │   └── RemoteUnavailable  unreachable after retries; also an EngineUnavailable
    │   └── ProtocolError       a model-server message breaks the protocol (engines/remote/wire)
    └── ModelServerError        an engine behind the model server crashed (engines/remote/server)
"""

from __future__ import annotations


class OpenAnomalyError(Exception):
    """Base of every error OpenAnomaly raises on purpose."""


class ConfigError(OpenAnomalyError):
    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class NotFound(OpenAnomalyError):
    def __init__(self, kind: str, ident: str) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} not found: {ident}")


class Conflict(OpenAnomalyError):
    def __init__(self, kind: str, ident: str) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} already exists: {ident}")


class PipelineBusy(OpenAnomalyError):
    """Another process runs this pipeline's windows now (it holds the lease), or this one lost
    the lease while running: nothing more is written or committed by this run."""

    def __init__(self, pipeline_id: str, owner: str | None) -> None:
        self.pipeline_id, self.owner = pipeline_id, owner
        super().__init__(f"pipeline {pipeline_id!r} is being inferred by {owner or 'another run'}")


class StoreError(OpenAnomalyError):
    """A store of pipelines, model versions, checkpoints or artifacts failed.

    Attributes:
        store: which one (``database``, ``artifacts``...), for logs and the API's answer.
    """

    def __init__(self, message: str, *, store: str) -> None:
        self.store = store
        super().__init__(message)


class StoreUnavailable(StoreError):
    """The database could not be reached or opened: refused, timed out, locked, unreadable."""


class TsdbError(OpenAnomalyError):
    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        self.url, self.status = url, status
        super().__init__(message)


class QueryError(TsdbError):
    """The TSDB understood the request and refused it; ``str()`` is the TSDB's own message."""


class TooManySeries(QueryError):
    """A query answered with more series than ``tsdb.max_series`` allows; refused before its
    arrays are built. The reader adds the query to the message."""

    def __init__(self, count: int, limit: int, *, query: str | None = None) -> None:
        self.count, self.limit, self.query = count, limit, query
        tail = f" (query: {query})" if query is not None else ""
        super().__init__(
            f"the query returned {count:,} series, more than tsdb.max_series={limit:,} "
            f"(OA_TSDB__MAX_SERIES): narrow the query, or raise the limit if memory allows{tail}"
        )


class TsdbUnavailable(TsdbError):
    """The TSDB could not be reached or kept failing (5xx, 429, timeouts) after retries.
    ``retry_after`` is the wait in seconds the server asked for (``Retry-After``), if any."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url=url, status=status)
        self.retry_after = retry_after


class WriteRejected(TsdbError):
    """Remote write refused with a 4xx other than 429: retrying would not help."""


class WriteUncertain(TsdbError):
    """A remote write request was sent and its answer lost (timeout, broken connection): the
    TSDB may hold it or not. Not retried blindly (VictoriaMetrics would store it twice); the
    window is completed from what the TSDB holds."""


class EngineError(OpenAnomalyError):
    """A model engine failed to fit or predict."""


class NotEnoughHistory(EngineError):
    """The training window holds too little data for the model to learn from. The pipeline keeps
    its current model (or, without one, the cold-start model) until a later training succeeds."""


class EngineNotInstalled(EngineError):
    def __init__(self, engine: str, extra: str) -> None:
        self.engine, self.extra = engine, extra
        super().__init__(
            f"engine {engine!r} is not installed: run scripts/setup {extra} "
            f"(the extra openanomaly[{extra}])"
        )


class EngineUnavailable(EngineError):
    """A service an engine depends on (a remote model server) could not be reached."""


class UnknownModel(EngineError):
    def __init__(self, what: str, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")


class NoData(OpenAnomalyError):
    """The query returned no series in the asked range."""

    def __init__(self, query: str, start: int, end: int) -> None:
        self.query, self.start, self.end = query, start, end
        super().__init__(f"no data for {query!r} between {_date(start)} and {_date(end)}")


def _date(ts: float) -> str:
    """RFC 3339 UTC, as in messages: a user reads dates, not unix seconds."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
