"""The one composition root: settings -> adapters -> services.

The API, the CLI, the service runner, the model server and the tests each call it once; tests
hand in fakes for any port (``bootstrap(settings, reader=MemoryMetrics(...))``).
``Container.close()`` releases what bootstrap opened (the TSDB's HTTP client, the SQL engine)
and stops the dispatcher and the scheduler, handed in or not, since they run on the container's
service; other adapters handed in stay the caller's to close.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr

from openanomaly.adapters.memory import MemoryJobHistory
from openanomaly.errors import ConfigError
from openanomaly.ports import (
    ArtifactStore,
    CheckpointStore,
    Clock,
    EngineFactory,
    JobDispatcher,
    JobHistory,
    LeaseStore,
    MetricsReader,
    MetricsWriter,
    ModelRegistry,
    OutcomeStore,
    PipelineStore,
    SampleReader,
    Scheduler,
    SourcedPipelineStore,
    Telemetry,
)
from openanomaly.services.cache import ModelCache
from openanomaly.services.health import PipelineHealth
from openanomaly.services.history import HistoryDispatcher
from openanomaly.services.inferencer import Inferencer
from openanomaly.services.service import Service
from openanomaly.services.trainer import Trainer
from openanomaly.services.validation import PipelineValidator, ValidatingPipelineStore
from openanomaly.settings import Settings, load_settings

if TYPE_CHECKING:
    import httpx

    from openanomaly.adapters.dispatch.celery import WorkClaims
    from openanomaly.adapters.prometheus.probe import TsdbProbe


@dataclass
class Container:
    """A process's service and the adapters it runs on. Use it as a context manager, or call
    ``close()``: the scheduler stops, the workers finish their jobs, then the stores and the
    HTTP client close. Closing twice is harmless."""

    settings: Settings
    service: Service
    dispatcher: JobDispatcher
    scheduler: Scheduler
    reader: MetricsReader
    writer: MetricsWriter
    telemetry: Telemetry
    samples: SampleReader | None = None
    """Reads back what the outputs already hold (recovery, ``backtest --write``)."""
    history: JobHistory = field(default_factory=MemoryJobHistory)
    """The run history: the config store's (SQL, MongoDB), else kept in this process."""
    claims: WorkClaims | None = None
    """The claims on jobs' work of the Celery dispatcher built here, which a task renews when
    it starts and releases when it ends (None: no Celery dispatcher was built, or the config
    store keeps no leases)."""
    _opened: ExitStack = field(default_factory=ExitStack, repr=False)

    def close(self) -> None:
        self._opened.close()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def bootstrap(
    settings: Settings | None = None,
    *,
    reader: MetricsReader | None = None,
    writer: MetricsWriter | None = None,
    pipelines: PipelineStore | None = None,
    registry: ModelRegistry | None = None,
    checkpoints: CheckpointStore | None = None,
    artifacts: ArtifactStore | None = None,
    engines: EngineFactory | None = None,
    dispatcher: JobDispatcher | None = None,
    samples: SampleReader | None = None,
    scheduler: Scheduler | None = None,
    telemetry: Telemetry | None = None,
    history: JobHistory | None = None,
    clock: Clock = time.time,
    follow: Path | None = None,
    celery_app: Any | None = None,
) -> Container:
    """Build every adapter the settings ask for, unless a test hands one in. ``follow`` is the
    file of ``run --pipelines``: its pipelines follow it (see ``FollowedFileStore``).
    ``celery_app``: the app a worker's dispatcher sends on (default: one from the settings)."""
    settings = settings or load_settings()
    sourced: SourcedPipelineStore | None = None
    outcomes: OutcomeStore | None = None  # in this process unless there is a database
    with ExitStack() as opened:  # on a failure half-way, what was opened is closed again
        if telemetry is None:
            from openanomaly.adapters.telemetry.prometheus import PrometheusTelemetry

            telemetry = PrometheusTelemetry()
        if reader is None or writer is None:
            tsdb_reader, tsdb_writer, tsdb_samples = _tsdb(settings, opened, telemetry)
            reader = reader or tsdb_reader
            writer = writer or tsdb_writer
            samples = samples or tsdb_samples
        if samples is None and isinstance(reader, SampleReader):
            samples = reader  # a fake TSDB reads its own samples back
        if (
            registry is None
            or checkpoints is None
            or (pipelines is None and settings.config_store != "yaml")
        ):
            store = _config_store(settings, opened)
            registry = registry or store
            outcomes = store
            checkpoints = checkpoints or store
            history = history or store
            if pipelines is None and settings.config_store != "yaml":
                pipelines = sourced = store
        if pipelines is None:
            from openanomaly.adapters.config.yaml_file import YamlPipelineStore

            assert settings.pipelines_file is not None  # checked by Settings
            pipelines = YamlPipelineStore(settings.pipelines_file)
        history = history or MemoryJobHistory()  # every store handed in: kept in this process
        artifacts = artifacts or _artifacts(settings)
        engines = engines or engine_factory(settings)
        validator = PipelineValidator(engines, max_steps=settings.max_range_steps)
        if follow is not None:
            if sourced is None:
                raise ConfigError(
                    "needs config_store=sqlite, postgres or mongo", where="run --pipelines"
                )
            from openanomaly.adapters.config.followed_file import FollowedFileStore

            pipelines = FollowedFileStore(sourced, follow, check=validator)
        # Every write of a pipeline (API, CLI) is checked against the engines installed here.
        pipelines = ValidatingPipelineStore(pipelines, validator)
        service = Service(
            pipelines=pipelines,
            registry=registry,
            checkpoints=checkpoints,
            reader=reader,
            engines=engines,
            trainer=Trainer(
                reader=reader, engines=engines, artifacts=artifacts, registry=registry, clock=clock
            ),
            inferencer=Inferencer(
                reader=reader,
                writer=writer,
                engines=engines,
                artifacts=artifacts,
                registry=registry,
                checkpoints=checkpoints,
                samples=samples,
                cache=ModelCache(size=settings.model_cache_size),
            ),
            telemetry=telemetry,
            clock=clock,
            leases=checkpoints if isinstance(checkpoints, LeaseStore) else None,
            health=PipelineHealth(outcomes, clock=clock),
            history=history,
            history_days=settings.job_history_days,
            writer=writer,
            samples=samples,
        )
        claims: WorkClaims | None = None
        if dispatcher is None and settings.dispatcher == "celery":
            claims = _work_claims(settings, checkpoints)
            dispatcher = _celery_dispatcher(settings, celery_app, claims)
        if dispatcher is None:
            from openanomaly.adapters.dispatch.threads import ThreadPoolDispatcher

            dispatcher = ThreadPoolDispatcher(
                service.run_logged, workers=settings.workers, grace=settings.shutdown_grace
            )
        # Every submission, by the API, the scheduler or a tick, gets its queued row.
        dispatcher = HistoryDispatcher(dispatcher, history, clock=clock)
        opened.callback(dispatcher.close)
        if scheduler is None:
            scheduler = _scheduler(settings, service, dispatcher, telemetry)
        opened.callback(scheduler.stop)  # last in, first out: no new jobs, then the workers
        return Container(
            settings,
            service,
            dispatcher,
            scheduler,
            reader,
            writer,
            telemetry,
            samples,
            history=history,
            claims=claims,
            _opened=opened.pop_all(),
        )


def engine_factory(settings: Settings) -> EngineFactory:
    """Every installed engine; the remote one sends ``remote_engine.token`` to model servers."""
    from openanomaly.engines import DefaultEngineFactory

    return DefaultEngineFactory(remote_token=settings.remote_engine.token)


@dataclass(frozen=True)
class ModelServerInputs:
    """What ``create_model_app`` and the HTTP server of ``openanomaly serve-model`` take."""

    engines: EngineFactory
    host: str
    port: int
    token: SecretStr | None
    state_key: SecretStr | None
    cache_size: int


def model_server(
    settings: Settings | None = None, *, engines: EngineFactory | None = None
) -> ModelServerInputs:
    """The model server's engine factory and settings (``model_server.*``)."""
    settings = settings or load_settings()
    m = settings.model_server
    return ModelServerInputs(
        engines=engines or engine_factory(settings),
        host=m.host,
        port=m.port,
        token=m.token,
        state_key=m.state_key,
        cache_size=m.cache_size,
    )


@contextmanager
def tsdb_probe(settings: Settings) -> Iterator[TsdbProbe]:
    """What ``validate --tsdb`` asks the TSDB with, on the same client settings as the service."""
    from openanomaly.adapters.prometheus.probe import TsdbProbe

    client = _tsdb_client(settings)
    try:
        yield TsdbProbe(settings.tsdb.url, client, now=time.time())
    finally:
        client.close()


def _tsdb_client(settings: Settings) -> httpx.Client:
    from openanomaly.adapters.prometheus.http import Tls, build_client

    t = settings.tsdb
    return build_client(
        username=t.username,
        password=_plain(t.password),
        bearer_token=_plain(t.bearer_token),
        tenant=t.tenant,
        headers={name: value.get_secret_value() for name, value in t.headers.items()},
        timeout=t.timeout,
        tls=Tls(**t.tls.model_dump()),
    )


def _tsdb(
    settings: Settings, opened: ExitStack, telemetry: Telemetry
) -> tuple[MetricsReader, MetricsWriter, SampleReader]:
    from openanomaly.adapters.prometheus.reader import PrometheusReader
    from openanomaly.adapters.prometheus.remote_write import READBACK_SETTLE, RemoteWriteWriter
    from openanomaly.adapters.prometheus.samples import PrometheusSampleReader

    t = settings.tsdb
    client = _tsdb_client(settings)
    opened.callback(client.close)
    if t.flavor == "auto":
        from openanomaly.adapters.prometheus.probe import detect_flavor

        flavor = detect_flavor(t.url, client)
    else:
        flavor = t.flavor
    reader = PrometheusReader(
        t.url,
        client=client,
        max_points=t.max_points,
        parallelism=t.read_parallelism,
        max_retries=t.read_retries,
        backoff=t.read_backoff,
        max_series=t.max_series,
    )
    writer = RemoteWriteWriter(
        t.remote_write_url,
        client=client,
        flavor=flavor,
        batch_samples=t.write_batch_samples,
        max_retries=t.write_retries,
        backoff=t.write_backoff,
        on_drop=telemetry.samples_dropped,
    )
    samples = PrometheusSampleReader(t.url, client=client, settle=READBACK_SETTLE.get(flavor, 0.0))
    return reader, writer, samples


def _celery_dispatcher(settings: Settings, app: Any, claims: WorkClaims | None) -> JobDispatcher:
    """The Celery dispatcher, claiming each job's work in ``claims`` (the config store's leases,
    when it has them) so that the cluster queues the same work once."""
    from openanomaly.adapters.celery.app import make_app
    from openanomaly.adapters.dispatch.celery import CeleryDispatcher

    return CeleryDispatcher(app if app is not None else make_app(settings), claims=claims)


def _work_claims(settings: Settings, store: CheckpointStore) -> WorkClaims | None:
    """Claims on jobs' work in ``store``'s leases; None when it keeps none. The one place that
    decides whether a config store can hold the cluster's claims."""
    if not isinstance(store, LeaseStore):
        return None
    from openanomaly.adapters.celery.app import claim_ttls
    from openanomaly.adapters.dispatch.celery import WorkClaims

    return WorkClaims(store, claim_ttls(settings))


def _scheduler(
    settings: Settings, service: Service, dispatcher: JobDispatcher, telemetry: Telemetry
) -> Scheduler:
    if settings.scheduler == "redbeat":
        # The `openanomaly beat` processes schedule (their leader follows the store): nothing
        # is scheduled in this process.
        from openanomaly.adapters.schedule.redbeat import BeatProcessScheduler

        return BeatProcessScheduler()
    from openanomaly.adapters.schedule.aps import ApsScheduler

    return ApsScheduler(
        service, dispatcher, sync_every=settings.pipeline_sync_every, telemetry=telemetry
    )


def _plain(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


class _ConfigStore(
    SourcedPipelineStore, ModelRegistry, CheckpointStore, OutcomeStore, JobHistory, Protocol
):
    """Every role the database stores (SqlStore, MongoStore) play."""

    def close(self) -> None: ...


def claims_alone(settings: Settings) -> WorkClaims | None:
    """The work claims of a process that runs no job, over the config store alone (the
    worker's main process, which ends the claim of a task killed at its hard limit); the store
    stays open as long as the process. None when the store keeps no leases."""
    with ExitStack() as opened:
        store = _config_store(settings, opened)
        opened.pop_all()
    return _work_claims(settings, store)


def _config_store(settings: Settings, opened: ExitStack) -> _ConfigStore:
    """The database of ``config_store`` (yaml keeps its registry in ``database_url`` too)."""
    url = settings.database_url.get_secret_value()
    store: _ConfigStore
    if settings.config_store == "mongo":
        from openanomaly.adapters.config.mongo import MongoStore

        store = MongoStore(url)
    else:  # sqlite, postgres, and yaml's registry
        from openanomaly.adapters.config.sql import SqlStore

        store = SqlStore(url)
    opened.callback(store.close)
    return store


def _artifacts(settings: Settings) -> ArtifactStore:
    if settings.artifact_store == "s3":
        from openanomaly.adapters.artifacts.s3 import S3ArtifactStore

        s3 = settings.s3
        assert s3.bucket is not None  # checked by Settings
        return S3ArtifactStore(
            s3.bucket,
            prefix=s3.prefix,
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=_plain(s3.access_key_id),
            secret_access_key=_plain(s3.secret_access_key),
        )
    if settings.artifact_store == "noop":
        from openanomaly.adapters.artifacts.noop import NoOpArtifactStore

        return NoOpArtifactStore()
    from openanomaly.adapters.artifacts.local import LocalArtifactStore

    return LocalArtifactStore(settings.artifacts_dir)
