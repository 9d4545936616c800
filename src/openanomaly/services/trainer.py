"""The Trainer: fetch the train window, fit the model over the whole panel, save the artifact,
record and activate a model version."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from openanomaly.domain.grid import align
from openanomaly.domain.records import ModelVersion
from openanomaly.domain.shards import WHOLE, Shard
from openanomaly.domain.spec import Pipeline, spec_hash
from openanomaly.domain.text import phases, shorten
from openanomaly.domain.trust import HISTORY_KEY, first_point
from openanomaly.errors import NoData
from openanomaly.ports import ArtifactStore, Clock, EngineFactory, MetricsReader, ModelRegistry
from openanomaly.services.shards import read

log = logging.getLogger(__name__)


class Trainer:
    def __init__(
        self,
        *,
        reader: MetricsReader,
        engines: EngineFactory,
        artifacts: ArtifactStore,
        registry: ModelRegistry,
        clock: Clock = time.time,
    ) -> None:
        self._reader = reader
        self._engines = engines
        self._artifacts = artifacts
        self._registry = registry
        self._clock = clock

    def train(
        self, pipeline: Pipeline, end: int | None = None, *, shard: Shard = WHOLE
    ) -> ModelVersion:
        """Fit ``shard``'s series on ``(end - train.window, end]`` (default: the latest
        complete step). A shard's version is recorded and activated under its state key
        (``pipeline#3/8``), its artifact beside the pipeline's (``.../<version>.3-of-8.bin``).

        Training the same pipeline for the same ``end`` again gives the same version id and
        overwrites the same artifact: a retried job is harmless. A shard with no series gets a
        version with ``series`` 0 and no artifact (a whole pipeline without any: NoData).
        """
        end = align(self._clock() - pipeline.delay if end is None else end, pipeline.step)
        start = end - pipeline.train.window
        engine = self._engines.create(pipeline.model, step=pipeline.step)
        began = time.perf_counter()
        read_seconds = 0.0
        series = 0
        extra: dict[str, str] = {}
        if engine.requires_fit:
            history = read(self._reader, pipeline, start, end, shard, recent=True)
            read_seconds = time.perf_counter() - began
            if len(history):
                engine.fit(history)
                series = len(history)
                extra[HISTORY_KEY] = str(first_point(history))
            elif shard.whole:
                raise NoData(shorten(pipeline.query), start, end)
            else:
                # The hash gave this shard no series of the query (a few series, many shards):
                # an empty model, so that it is not trained again at every tick. Series that
                # come to it later are cold-started until its next training, as new series are.
                log.info("pipeline=%s has no series: an empty model", shard.key(pipeline.id))
        fit_seconds = time.perf_counter() - began
        digest = spec_hash(pipeline)
        stamp = datetime.fromtimestamp(end, UTC).strftime("%Y%m%dT%H%M%SZ")
        version = f"{stamp}-{digest[:8]}"
        key = None
        if engine.requires_fit and series:
            part = "" if shard.whole else f".{shard.index}-of-{shard.count}"
            key = f"pipelines/{pipeline.id}/{version}{part}.bin"
            self._artifacts.save(key, engine.dumps())
        record = ModelVersion(
            pipeline_id=shard.key(pipeline.id),
            version=version,
            created_at=self._clock(),
            engine=pipeline.model.engine,
            model=pipeline.model.name or "default",
            spec_hash=digest,
            series=series,
            artifact=key,
            train_start=start,
            train_end=end,
            fit_seconds=round(fit_seconds, 3),
            extra=extra,
        )
        self._registry.record(record, activate=True)
        # fit= is the read and the fit together (ModelVersion.fit_seconds); the phases apart
        # say where a training's time went, as the inferencer's line does for a window.
        timings = {
            "read": read_seconds,
            "model": fit_seconds - read_seconds,
            "save": time.perf_counter() - began - fit_seconds,
        }
        log.info(
            "trained pipeline=%s version=%s series=%d fit=%.2fs %s",
            shard.key(pipeline.id),
            version,
            series,
            fit_seconds,
            phases(timings),
        )
        return record
