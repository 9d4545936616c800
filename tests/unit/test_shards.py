"""Shards: every series in one shard, for good; sharded outputs identical to the unsharded
run's; per-shard checkpoints, journals and models; a change of ``shards`` loses and repeats
no window; a shard's reader builds only its own series, from an answer it never holds whole."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryMetrics,
    MemoryPipelineStore,
    MemoryRegistry,
    RecordingDispatcher,
)
from openanomaly.adapters.prometheus import stream
from openanomaly.adapters.prometheus.decode import decode_matrix
from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.telemetry.prometheus import PrometheusTelemetry
from openanomaly.bootstrap import bootstrap
from openanomaly.domain.records import InferWindow
from openanomaly.domain.series import SeriesBatch, series_key
from openanomaly.domain.shards import Shard, shard_of, shards
from openanomaly.domain.spec import Pipeline, spec_hash
from openanomaly.engines import DefaultEngineFactory
from openanomaly.errors import TsdbUnavailable
from openanomaly.services.service import Service
from openanomaly.settings import Settings
from tests.unit.test_exactly_once import STEP, T0, due, each_once, infer

NOW = T0 + 5 * 3600 + 30
ARTIFACTS: dict[int, MemoryArtifactStore] = {}


def service(tsdb: MemoryMetrics, store: MemoryRegistry, p: Pipeline, *, now: float) -> Service:
    """A service over the fakes with the built-in engine; several over one ``store`` are
    processes over one database and one artifact store."""
    c = bootstrap(
        Settings(),
        reader=tsdb,
        writer=tsdb,
        pipelines=MemoryPipelineStore([p]),
        registry=store,
        checkpoints=store,
        artifacts=ARTIFACTS.setdefault(id(store), MemoryArtifactStore()),
        engines=DefaultEngineFactory(),
        dispatcher=RecordingDispatcher(),
        telemetry=PrometheusTelemetry(),
        clock=lambda: now,
    )
    c.close()
    return c.service


def labels(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [{"__name__": "m", "host": f"h{i}", "dc": f"d{i % 3}"} for i in range(offset, n)]


def panel(n: int, hours: int = 6, seed: int = 0) -> SeriesBatch:
    ts = np.arange(T0, T0 + hours * 3600 + 1, STEP)
    rng = np.random.default_rng(seed)
    season = 10 * np.sin(2 * np.pi * np.arange(ts.size) / 60)
    values = 100 + np.arange(n)[:, None] + season + rng.normal(0, 1, size=(n, ts.size))
    values[0, ts.size - 30] += 50  # one anomaly, so that the scores are not all alike
    return SeriesBatch(tuple(labels(n)), ts, values)


def pipeline(shards_: int = 1, **kw: Any) -> Pipeline:
    base = {
        "id": "p1",
        "query": "m",
        "step": "1m",
        "train": {"window": "4h"},
        "infer": {"every": "5m", "context": "30m", "delay": "1s", "max_catchup": "1h"},
        "model": {"engine": "builtin", "name": "profile", "params": {"season": 3600}},
        "shards": shards_,
    }
    return Pipeline.model_validate({**base, **kw})


# --- which shard a series is in ----------------------------------------------------------------


def test_every_series_lands_in_exactly_one_shard_and_stays_there_as_others_come_and_go() -> None:
    few, many = labels(200), labels(1200, offset=100)  # 100 gone, 1000 new
    for count in (2, 3, 8):
        parts = [Shard(i, count).mask(few) for i in range(count)]
        assert (np.sum(parts, axis=0) == 1).all()  # one shard each
        assert all(p.sum() > 200 / count / 3 for p in parts)  # and spread out
        before = {series_key(lb): shard_of(lb, count) for lb in few}
        after = {series_key(lb): shard_of(lb, count) for lb in many}
        assert {k: before[k] for k in after.keys() & before.keys()} == {
            k: after[k] for k in after.keys() & before.keys()
        }


def test_the_shard_of_a_series_does_not_depend_on_the_process() -> None:
    # Not Python's hash (salted per process): two processes with other hash seeds agree.
    code = (
        "from openanomaly.domain.shards import shard_of; "
        "print([shard_of({'host': f'h{i}', '__name__': 'm'}, 8) for i in range(64)])"
    )
    here = str([shard_of({"__name__": "m", "host": f"h{i}"}, 8) for i in range(64)])
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == here, done.stderr


def test_the_shard_count_is_validated_and_part_of_the_model_hash() -> None:
    assert spec_hash(pipeline(1)) == spec_hash(pipeline(1))
    assert spec_hash(pipeline(4)) != spec_hash(pipeline(1)) != spec_hash(pipeline(8))
    with pytest.raises(ValueError, match="shards"):
        pipeline(0)
    with pytest.raises(ValueError, match="shards"):
        pipeline(5000)


# --- outputs -----------------------------------------------------------------------------------


def stored(tsdb: MemoryMetrics) -> dict[Any, list[Any]]:
    return {k: sorted(v) for k, v in tsdb.stored.items()}


def run_all(svc: Service, p: Pipeline, shard_jobs: bool) -> None:
    trains = svc.train_jobs(p.id) if shard_jobs else [svc.train_job(p.id)]
    for job in trains:
        svc.run(job)
    jobs = svc.due_infer_jobs(p.id) if shard_jobs else [due(p, NOW)]
    for w in jobs:
        svc.run(w)


@pytest.mark.parametrize("count", [2, 3, 7])
def test_sharded_outputs_are_identical_to_the_unsharded_run(count: int) -> None:
    whole = MemoryMetrics({"m": panel(60)})
    run_all(service(whole, MemoryRegistry(), pipeline(1), now=NOW), pipeline(1), False)
    sharded, store = MemoryMetrics({"m": panel(60)}), MemoryRegistry()
    svc = service(sharded, store, pipeline(count), now=NOW)
    assert len(svc.train_jobs("p1")) == count and len(svc.due_infer_jobs("p1")) == count
    run_all(svc, pipeline(count), True)
    assert stored(sharded) == stored(whole)
    each_once(sharded, NOW // 300 * 300 - 3600, NOW // 300 * 300, 60)
    versions = [store.active(f"p1#{i}/{count}") for i in range(count)]
    assert sum(v.series for v in versions if v is not None) == 60  # a model per shard
    assert store.active("p1") is None
    # The pipeline's own key rolls the shards up; a job without a shard runs them all.
    assert store.state("p1").last_end == NOW // 300 * 300
    assert svc.due_infer_jobs("p1") == []


def test_a_schedulers_tick_submits_one_job_per_shard() -> None:
    # What ApsScheduler and the beat's tick task submit (services/ticks.py via due_jobs).
    svc = service(MemoryMetrics({"m": panel(30)}), MemoryRegistry(), pipeline(3), now=NOW)
    first = svc.due_jobs("p1", "infer")  # no model yet: a training per shard, then the windows
    assert [(j.kind, getattr(j, "shard", None)) for j in first] == [
        ("train", 0), ("train", 1), ("train", 2), ("infer", 0), ("infer", 1), ("infer", 2)
    ]  # fmt: skip
    assert [getattr(j, "shard", None) for j in svc.due_jobs("p1", "train")] == [0, 1, 2]


def test_a_whole_pipeline_job_runs_every_shard_and_answers_their_sum() -> None:
    tsdb, store = MemoryMetrics({"m": panel(30)}), MemoryRegistry()
    svc = service(tsdb, store, pipeline(3), now=NOW)
    version = svc.run(svc.train_job("p1"))
    assert getattr(version, "series", None) == 30
    result = infer(svc, due(pipeline(3), NOW))
    assert result.series == 30 and result.windows == 12
    each_once(tsdb, NOW // 300 * 300 - 3600, NOW // 300 * 300, 30)


# --- exactly once, per shard ---------------------------------------------------------------------


@pytest.mark.parametrize("behaves", ["prometheus", "victoriametrics"])
def test_a_shard_killed_mid_write_is_recovered_from_its_own_journal(behaves: Any) -> None:
    p = pipeline(2)
    tsdb, store = (
        MemoryMetrics({"m": panel(20)}, behaves=behaves, batch_samples=7),
        MemoryRegistry(),
    )
    svc = service(tsdb, store, p, now=NOW)
    for job in svc.train_jobs("p1"):
        svc.run(job)
    first, second = svc.due_infer_jobs("p1")
    tsdb.fail_requests = {tsdb.requests + 70}  # in shard 0's third window (~29 a window)
    with pytest.raises(TsdbUnavailable):
        svc.run(first)
    broken = store.state("p1#0/2")
    assert broken.pending is not None and broken.last_end == broken.pending[0]
    svc.run(second)  # the other shard is not held up by it
    assert store.state("p1#1/2").pending is None
    assert store.state("p1#1/2").last_end == second.end
    restarted = service(tsdb, store, p, now=NOW)
    (again,) = restarted.due_infer_jobs("p1")
    assert again.shard == 0
    assert infer(restarted, again).recovered == 1
    each_once(tsdb, NOW // 300 * 300 - 3600, NOW // 300 * 300, 20)


def test_a_job_planned_for_a_shard_that_is_gone_does_nothing() -> None:
    tsdb = MemoryMetrics({"m": panel(10)})
    svc = service(tsdb, MemoryRegistry(), pipeline(2), now=NOW)
    result = infer(svc, InferWindow("p1", NOW - 600, NOW // 300 * 300, shard=5))
    assert result.windows == 0 and not tsdb.stored


@pytest.mark.parametrize(("before", "after"), [(1, 3), (2, 3), (4, 2), (3, 1)])
def test_a_change_of_shards_loses_and_repeats_no_window(before: int, after: int) -> None:
    """Shards are changed while they stand at different checkpoints (shard 0 ran one window
    more), and the new layout starts from the pipeline's roll-up."""
    tsdb, store = MemoryMetrics({"m": panel(24)}), MemoryRegistry()
    early = NOW - 1800
    old = service(tsdb, store, pipeline(before), now=early)
    for job in old.train_jobs("p1"):
        old.run(job)
    for w in old.due_infer_jobs("p1"):
        old.run(w)
    ahead = service(tsdb, store, pipeline(before), now=early + 300)
    ahead.run(ahead.due_infer_jobs("p1")[0])  # one shard (or the whole) a window ahead
    new = service(tsdb, store, pipeline(after), now=NOW)
    assert new.needs_training("p1")
    for job in new.train_jobs("p1"):
        new.run(job)
    for w in new.due_infer_jobs("p1"):
        new.run(w)
    each_once(tsdb, early // 300 * 300 - 3600, NOW // 300 * 300, 24)


# --- the reader keeps only its shard's series ------------------------------------------------


def answer(n: int, points: int = 5) -> bytes:
    result = [
        {"metric": lb, "values": [[T0 + k * STEP, str(i + k / 10)] for k in range(points)]}
        for i, lb in enumerate(labels(n))
    ]
    body = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    return orjson.dumps({**body, "stats": {"seriesFetched": str(n)}})


def test_a_streamed_answer_decodes_to_its_shard_from_pieces_smaller_than_the_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content, shard = answer(500), Shard(1, 4)
    seen: list[int] = []

    def recording(piece: bytes, **kw: Any) -> Any:
        seen.append(len(piece))
        return decode_matrix(piece, **kw)

    monkeypatch.setattr(stream, "decode_matrix", recording)
    blocks = (content[i : i + 997] for i in range(0, len(content), 997))
    got = stream.decode_stream(blocks, keep=shard.mask, piece_bytes=4096)
    whole = decode_matrix(content)
    mask = shard.mask(whole.metrics)
    assert len(seen) > 10 and max(seen) < 4096 + 997 + 200 < len(content) / 5
    assert got.metrics == [m for m, k in zip(whole.metrics, mask, strict=True) if k]
    rows = np.flatnonzero(mask)
    want = np.concatenate([whole.values[whole.bounds[i] : whole.bounds[i + 1]] for i in rows])
    assert np.array_equal(got.values, want) and got.bounds[-1] == want.size
    assert got.status == "success" and got.result_type == "matrix"


def test_a_shard_reader_builds_only_its_series_and_together_they_are_the_query() -> None:
    content = answer(300, points=3)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=content)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    reader = PrometheusReader("http://tsdb", client=client, max_series=120)
    end = T0 + 2 * STEP
    parts = [reader.query_shard("m", T0, end, STEP, s) for s in shards(3)]
    assert all(len(p) < 120 for p in parts)  # max_series counts the shard's series
    whole = PrometheusReader("http://tsdb", client=client).query_range("m", T0, end, STEP)
    assert sorted(k for p in parts for k in p.keys) == sorted(whole.keys)
    for s, p in zip(shards(3), parts, strict=True):
        assert all(shard_of(lb, 3) == s.index for lb in p.labels)
        rows = [whole.keys.index(k) for k in p.keys]
        assert np.array_equal(p.values, whole.values[rows])


# --- a shard with no series ---------------------------------------------------------------------


def test_a_shard_without_series_trains_an_empty_model_and_its_windows_write_nothing() -> None:
    count = 8  # three series over eight shards: most shards get none
    empty = [s for s in shards(count) if not s.mask(labels(3)).any()]
    assert empty
    whole = MemoryMetrics({"m": panel(3)})
    run_all(service(whole, MemoryRegistry(), pipeline(1), now=NOW), pipeline(1), False)
    tsdb, store = MemoryMetrics({"m": panel(3)}), MemoryRegistry()
    svc = service(tsdb, store, pipeline(count), now=NOW)
    run_all(svc, pipeline(count), True)  # no NoData
    for s in empty:
        version = store.active(s.key("p1"))
        assert version is not None and version.series == 0 and version.artifact is None
    assert not svc.needs_training("p1")  # no training again at every tick
    assert [j.kind for j in svc.due_jobs("p1", "infer")] == []
    runs = svc.runs.history.runs() if svc.runs.history is not None else []
    assert runs and all(r.status == "ok" for r in runs)
    assert stored(tsdb) == stored(whole)
    assert all(store.state(s.key("p1")).last_end == NOW // 300 * 300 for s in empty)


def test_a_sharded_query_without_any_series_is_trained_again_as_an_unsharded_one() -> None:
    nothing = panel(1).take(np.array([], dtype=np.intp))
    svc = service(MemoryMetrics({"m": nothing}), MemoryRegistry(), pipeline(2), now=NOW)
    for job in svc.train_jobs("p1"):
        svc.run(job)
    assert svc.needs_training("p1")  # no series anywhere: as after NoData, unsharded
