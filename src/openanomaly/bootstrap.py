"""The one composition root: settings -> adapters -> services.

The API, the CLI, the service runner and the tests each call :func:`bootstrap` once; tests hand
in fakes for any port (``bootstrap(settings, reader=MemoryMetrics(...))``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from openanomaly.adapters.telemetry.prometheus import ServiceMetrics
from openanomaly.ports import (
    ArtifactStore,
    CheckpointStore,
    Clock,
    EngineFactory,
    JobDispatcher,
    LeaseStore,
    MetricsReader,
    MetricsWriter,
    ModelRegistry,
    PipelineStore,
    SampleReader,
)
from openanomaly.services.cache import ModelCache
from openanomaly.services.inferencer import Inferencer
from openanomaly.services.service import Service
from openanomaly.services.trainer import Trainer
from openanomaly.settings import Settings, load_settings


@dataclass
class Container:
    settings: Settings
    service: Service
    dispatcher: JobDispatcher
    reader: MetricsReader
    writer: MetricsWriter

    def close(self) -> None:
        self.dispatcher.close()


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
    clock: Clock = time.time,
) -> Container:
    """Build every adapter the settings ask for, unless a test hands one in."""
    settings = settings or load_settings()
    if reader is None or writer is None or samples is None:
        tsdb_reader, tsdb_writer, tsdb_samples = _tsdb(settings)
        reader = reader or tsdb_reader
        writer = writer or tsdb_writer
        samples = samples or (reader if isinstance(reader, SampleReader) else tsdb_samples)
    if (
        registry is None
        or checkpoints is None
        or (pipelines is None and settings.config_store == "sqlite")
    ):
        from openanomaly.adapters.config.sql import SqlStore

        sql = SqlStore(settings.database_url.get_secret_value())
        registry = registry or sql
        checkpoints = checkpoints or sql
        if pipelines is None and settings.config_store == "sqlite":
            pipelines = sql
    if pipelines is None:
        from openanomaly.adapters.config.yaml_file import YamlPipelineStore

        assert settings.pipelines_file is not None  # checked by Settings
        pipelines = YamlPipelineStore(settings.pipelines_file)
    artifacts = artifacts or _artifacts(settings)
    if engines is None:
        from openanomaly.engines import DefaultEngineFactory

        engines = DefaultEngineFactory()
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
            cache=ModelCache(),
        ),
        metrics=ServiceMetrics(),
        clock=clock,
        leases=checkpoints if isinstance(checkpoints, LeaseStore) else None,
    )
    if dispatcher is None:
        from openanomaly.adapters.dispatch.threads import ThreadPoolDispatcher

        dispatcher = ThreadPoolDispatcher(service.run_logged, workers=settings.workers)
    return Container(settings, service, dispatcher, reader, writer)


def _tsdb(settings: Settings) -> tuple[MetricsReader, MetricsWriter, SampleReader]:
    from openanomaly.adapters.prometheus.http import build_client
    from openanomaly.adapters.prometheus.reader import PrometheusReader
    from openanomaly.adapters.prometheus.remote_write import READBACK_SETTLE, RemoteWriteWriter
    from openanomaly.adapters.prometheus.samples import PrometheusSampleReader

    t = settings.tsdb
    client = build_client(t)
    reader = PrometheusReader(
        t.url, client=client, max_points=t.max_points, parallelism=t.read_parallelism
    )
    writer = RemoteWriteWriter(
        t.remote_write_url, client=client, flavor=t.flavor, batch_samples=t.write_batch_samples
    )
    samples = PrometheusSampleReader(
        t.url, client=client, settle=READBACK_SETTLE.get(t.flavor, 0.0)
    )
    return reader, writer, samples


def _artifacts(settings: Settings) -> ArtifactStore:
    if settings.artifact_store == "noop":
        from openanomaly.adapters.artifacts.noop import NoOpArtifactStore

        return NoOpArtifactStore()
    from openanomaly.adapters.artifacts.local import LocalArtifactStore

    return LocalArtifactStore(settings.artifacts_dir)
