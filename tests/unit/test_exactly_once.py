"""Exactly once: windows, catch-up, recovery of interrupted writes and leases, against fakes
that behave like Prometheus (refuses a whole request with any out-of-order sample) and like
VictoriaMetrics (stores duplicates), so that any double write shows."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
from typing import Any, Literal

import numpy as np
import pytest

from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryMetrics,
    MemoryPipelineStore,
    MemoryRegistry,
    RecordingDispatcher,
)
from openanomaly.adapters.telemetry.prometheus import PrometheusTelemetry
from openanomaly.bootstrap import bootstrap
from openanomaly.domain.records import InferResult, InferWindow
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import Pipeline
from openanomaly.domain.windows import due_window, windows
from openanomaly.engines import DefaultEngineFactory
from openanomaly.errors import PipelineBusy, TsdbUnavailable
from openanomaly.ports import EngineFactory
from openanomaly.services.lease import dead_owner
from openanomaly.services.service import Service
from openanomaly.settings import Settings
from openanomaly.synthetic import seasonal_panel

STEP = 60
T0 = 1_700_006_400  # a multiple of 3600
OUTPUTS = ("anomaly_score", "anomaly_pred", "anomaly_lower", "anomaly_upper")
Behaves = Literal["prometheus", "victoriametrics"]


def infer(svc: Service, window: InferWindow | None, *, wait: float = 0.0) -> InferResult:
    """Run an inference job; its result (the type checker cannot tell it from a training's)."""
    assert window is not None
    result = svc.run(window, wait=wait)
    assert isinstance(result, InferResult)
    return result


def panel(n: int = 4, hours: int = 6, seed: int = 0) -> SeriesBatch:
    ts = np.arange(T0, T0 + hours * 3600 + 1, STEP)
    rng = np.random.default_rng(seed)
    labels = tuple({"__name__": "m", "host": f"h{i}"} for i in range(n))
    return SeriesBatch(labels, ts, 100 + rng.normal(0, 1, size=(n, ts.size)))


def pipeline(**kw: Any) -> Pipeline:
    base = {
        "id": "p1",
        "query": "m",
        "step": "1m",
        "infer": {"every": "5m", "context": "30m", "delay": "1s", "max_catchup": "1h"},
    }
    return Pipeline.model_validate({**base, **kw})


def service(
    tsdb: MemoryMetrics,
    store: MemoryRegistry,
    p: Pipeline,
    *,
    now: float,
    engines: EngineFactory | None = None,
) -> Service:
    """A service over the fakes, as ``bootstrap`` builds it: several over one ``store`` are
    processes over one database."""
    c = bootstrap(
        Settings(),
        reader=tsdb,
        writer=tsdb,
        pipelines=MemoryPipelineStore([p]),
        registry=store,
        checkpoints=store,
        artifacts=MemoryArtifactStore(),
        engines=engines or MemoryEngineFactory(),
        dispatcher=RecordingDispatcher(),
        telemetry=PrometheusTelemetry(),
        clock=lambda: now,
    )
    c.close()  # nothing of it is used but the service, which holds only the fakes
    return c.service


def each_once(tsdb: MemoryMetrics, start: int, end: int, series: int) -> None:
    """Every output of every series has exactly one sample at every step of (start, end]."""
    expected = list(range(start + STEP, end + 1, STEP))
    for name in OUTPUTS:
        stored = {k: v for k, v in tsdb.stored.items() if dict(k)["__name__"] == name}
        assert len(stored) == series, name
        for samples in stored.values():
            assert [t for t, _ in samples] == expected, name


@pytest.mark.parametrize("behaves", ["prometheus", "victoriametrics"])
def test_a_crash_mid_write_is_completed_without_resending(behaves: Behaves) -> None:
    p, now = pipeline(), T0 + 5 * 3600 + 30
    calm = MemoryMetrics({"m": panel()}, behaves=behaves, batch_samples=7)
    service(calm, MemoryRegistry(), p, now=now).run(due(p, now))
    tsdb = MemoryMetrics({"m": panel()}, behaves=behaves, batch_samples=7)
    tsdb.fail_requests = {40}  # well inside the third 5-minute window
    store = MemoryRegistry()
    with pytest.raises(TsdbUnavailable):
        service(tsdb, store, p, now=now).run(due(p, now))
    state = store.state("p1")
    assert state.pending is not None and state.last_end == state.pending[0]
    assert state.owner is None  # released on the way out
    result = infer(service(tsdb, store, p, now=now), due(p, now))  # a restart
    assert result.recovered == 1 and tsdb.duplicates() == 0
    each_once(tsdb, T0 + 4 * 3600, T0 + 5 * 3600, 4)
    assert tsdb.stored == calm.stored  # same samples, same values as an undisturbed run
    assert store.state("p1").pending is None and store.last_end("p1") == T0 + 5 * 3600


def due(p: Pipeline, now: float) -> InferWindow:
    window = due_window(p, None, now)
    assert window is not None
    return window


@pytest.mark.parametrize("behaves", ["prometheus", "victoriametrics"])
def test_a_lost_answer_is_retried_by_reading_back_not_by_resending(
    behaves: Behaves, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("openanomaly.services.inferencer.RECOVER_BACKOFF", 0.0)
    p, now = pipeline(), T0 + 5 * 3600 + 30
    tsdb, store = MemoryMetrics({"m": panel()}, behaves=behaves, batch_samples=7), MemoryRegistry()
    tsdb.lost_answers = {3, 40, 41}
    result = infer(service(tsdb, store, p, now=now), due(p, now))
    assert tsdb.duplicates() == 0 and result.windows == 12
    each_once(tsdb, T0 + 4 * 3600, T0 + 5 * 3600, 4)
    assert store.state("p1").pending is None


def test_the_same_range_run_again_or_extended_sends_only_what_is_new() -> None:
    p, now = pipeline(), T0 + 5 * 3600 + 30
    tsdb, store = MemoryMetrics({"m": panel()}), MemoryRegistry()
    svc = service(tsdb, store, p, now=now)
    a, b, c = T0 + 4 * 3600, T0 + 4 * 3600 + 900, T0 + 4 * 3600 + 1800
    assert infer(svc, InferWindow("p1", a, b)).samples_written == 4 * 4 * 15
    assert infer(svc, InferWindow("p1", a, b)).samples_written == 0
    assert infer(svc, InferWindow("p1", a, c)).samples_written == 4 * 4 * 15
    assert tsdb.duplicates() == 0
    each_once(tsdb, a, c, 4)


def test_a_catchup_is_written_window_by_window_in_time_order() -> None:
    p, now = pipeline(), T0 + 5 * 3600 + 30
    tsdb, store = MemoryMetrics({"m": panel()}, batch_samples=10**6), MemoryRegistry()
    tsdb.fail_requests = {5}  # the sixth window's write fails
    with pytest.raises(TsdbUnavailable):
        service(tsdb, store, p, now=now).run(due(p, now))
    assert store.last_end("p1") == T0 + 4 * 3600 + 5 * 300  # five windows committed
    assert len(tsdb.queries) == 1  # the whole range and its context read at once
    assert [q[1:3] for q in tsdb.queries] == [(T0 + 4 * 3600 - 1800, T0 + 5 * 3600)]


def test_an_outage_beyond_max_catchup_is_skipped_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p, now = pipeline(), T0 + 5 * 3600 + 30
    tsdb, store = MemoryMetrics({"m": panel()}), MemoryRegistry()
    store.advance("p1", T0 + 3600)
    svc = service(tsdb, store, p, now=now)
    window = svc.due_infer("p1")
    assert window == InferWindow("p1", T0 + 4 * 3600, T0 + 5 * 3600)
    with caplog.at_level(logging.WARNING):
        result = infer(svc, window)
    assert result.skipped == {"catchup": 3 * 60 * 4}
    assert "720 points (4 series) not scored" in caplog.text
    exposed = svc.telemetry.exposition()[0].decode()
    assert 'openanomaly_points_skipped_total{pipeline="p1",reason="catchup"} 720.0' in exposed
    each_once(tsdb, T0 + 4 * 3600, T0 + 5 * 3600, 4)


def test_windows_older_than_the_tsdb_takes_are_skipped_and_the_pipeline_moves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p, now = pipeline(), T0 + 5 * 3600 + 30
    oldest = T0 + 4 * 3600 + 1300  # after the first step of the fifth window
    tsdb = MemoryMetrics({"m": panel()}, behaves="prometheus", oldest=oldest)
    store = MemoryRegistry()
    with caplog.at_level(logging.WARNING):
        result = infer(service(tsdb, store, p, now=now), due(p, now))
    assert store.last_end("p1") == T0 + 5 * 3600 and store.state("p1").pending is None
    assert result.skipped["too_old"] == (4 * 5 + 1) * 4  # four windows and one step, 4 series
    assert "older than the TSDB" in caplog.text
    written = {t for samples in tsdb.stored.values() for t, _ in samples}
    assert min(written) >= oldest and max(written) == T0 + 5 * 3600


def test_two_services_on_one_store_write_a_window_once() -> None:
    p, now = pipeline(), T0 + 5 * 3600 + 30
    tsdb, store = MemoryMetrics({"m": panel()}, batch_samples=3), MemoryRegistry()
    services = [service(tsdb, store, p, now=now) for _ in range(4)]
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def run(svc: Service) -> None:
        barrier.wait()
        try:
            svc.run(due(p, now), wait=30)
            outcomes.append("ran")
        except PipelineBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=run, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["ran"] * 4  # each waited for the lease, then found the work done
    assert tsdb.duplicates() == 0
    each_once(tsdb, T0 + 4 * 3600, T0 + 5 * 3600, 4)


def test_a_held_lease_makes_a_run_busy_and_writes_nothing() -> None:
    p, now = pipeline(), T0 + 5 * 3600 + 30
    tsdb, store = MemoryMetrics({"m": panel()}), MemoryRegistry()
    store.acquire("p1", "someone-else", ttl=600)
    with pytest.raises(PipelineBusy, match="someone-else"):
        service(tsdb, store, p, now=now).run(due(p, now))
    assert not tsdb.stored and store.last_end("p1") is None


def test_a_series_appearing_inside_a_window_is_scored_from_its_first_points() -> None:
    p = pipeline(infer={"every": "10m", "context": "30m", "delay": "1s"})
    base = panel()
    late = np.full((1, base.timestamps.size), np.nan)
    born = T0 + 4 * 3600 + 240  # four minutes into the window (T0+4h, T0+4h+10m]
    late[0, base.timestamps >= born] = 7.0 + np.arange((base.timestamps >= born).sum()) % 2
    tsdb = MemoryMetrics(
        {
            "m": SeriesBatch(
                (*base.labels, {"__name__": "m", "host": "new"}),
                base.timestamps,
                np.vstack([base.values, late]),
            )
        }
    )
    svc = service(tsdb, MemoryRegistry(), p, now=T0 + 5 * 3600)
    svc.run(InferWindow("p1", T0 + 4 * 3600, T0 + 4 * 3600 + 600))
    new = next(
        v
        for k, v in tsdb.stored.items()
        if ("host", "new") in k and dict(k)["__name__"] == "anomaly_score"
    )
    # Its first point has no history at all; every later one is scored.
    assert [t for t, _ in new] == list(range(born + STEP, T0 + 4 * 3600 + 601, STEP))


def test_windows_end_on_the_every_grid_even_for_an_unaligned_range() -> None:
    ws = windows(pipeline(), T0 + 120, T0 + 1080)
    assert [(w.start - T0, w.end - T0) for w in ws] == [
        (120, 300),
        (300, 600),
        (600, 900),
        (900, 1080),
    ]


def random_walk(n: int, ts: np.ndarray, seed: int = 1) -> SeriesBatch:
    rng = np.random.default_rng(seed)
    values = 100 + np.cumsum(rng.normal(0, 1, size=(n, ts.size)), axis=1)
    return SeriesBatch(tuple({"__name__": "m", "i": str(i)} for i in range(n)), ts, values)


@pytest.mark.parametrize("kind", ["seasonal", "random_walk"])
def test_an_hour_of_catchup_flags_no_more_than_the_same_hour_scored_live(kind: str) -> None:
    # The long-window case: one hour forecast in one piece from the context before it
    # flagged 314 of 720 seasonal points and 1,982 of 4,800 random-walk ones.
    ts = np.arange(T0, T0 + 6 * 3600 + 1, STEP)
    data = seasonal_panel(12, ts, seed=3) if kind == "seasonal" else random_walk(80, ts)
    p = pipeline(
        infer={"every": "1m", "context": "1h", "delay": "1s", "max_catchup": "1h"},
        model={"engine": "builtin", "name": "profile"},
        train={"window": "4h"},
    )
    now = T0 + 6 * 3600 + 30
    runs = []
    for live in (False, True):
        tsdb, store = MemoryMetrics({"m": data}), MemoryRegistry()
        svc = service(tsdb, store, p, now=now, engines=DefaultEngineFactory())
        svc.run(svc.train_job("p1", T0 + 5 * 3600))
        store.advance("p1", T0 + 5 * 3600)
        if live:
            for end in range(T0 + 5 * 3600 + STEP, T0 + 6 * 3600 + 1, STEP):
                svc.run(InferWindow("p1", end - STEP, end))
        else:
            svc.run(InferWindow("p1", T0 + 5 * 3600, T0 + 6 * 3600))
        runs.append(tsdb.stored)
    catchup, live_run = runs
    assert catchup == live_run  # the same samples, as if the service had never been away
    scores = [v for k, s in catchup.items() if dict(k)["__name__"] == "anomaly_score" for _, v in s]
    assert len(scores) == len(data) * 60
    assert sum(v > 1 for v in scores) <= 0.02 * len(scores)  # one piece: 805 of 4,800 walks


def test_the_lease_of_a_killed_process_on_this_host_is_taken_over_at_once() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    p, now = pipeline(), T0 + 5 * 3600 + 30
    tsdb, store = MemoryMetrics({"m": panel()}), MemoryRegistry()
    namespace = os.stat("/proc/self/ns/pid").st_ino
    killed = f"{socket.gethostname()}:{gone.pid}:{namespace}:0123abcd"
    store.acquire("p1", killed, ttl=600)
    store.begin("p1", T0 + 4 * 3600, T0 + 4 * 3600 + 300, owner=killed)
    result = infer(service(tsdb, store, p, now=now), due(p, now))  # no wait: no lease to wait out
    assert result.recovered == 1 and tsdb.duplicates() == 0
    each_once(tsdb, T0 + 4 * 3600, T0 + 5 * 3600, 4)


def test_a_live_owner_is_never_taken_over() -> None:
    other = service(MemoryMetrics(), MemoryRegistry(), pipeline(), now=T0)  # alive, this process
    assert not dead_owner(other.owner)
    namespace = os.stat("/proc/self/ns/pid").st_ino
    assert not dead_owner(f"{socket.gethostname()}:not-a-pid:{namespace}:abcd")
    assert not dead_owner(f"another-host:{os.getpid()}:{namespace}:abcd")
    other_ns = namespace + 1
    assert not dead_owner(f"{socket.gethostname()}:{os.getpid()}:{other_ns}:abcd")
    assert not dead_owner(None)
