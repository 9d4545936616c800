"""Exactly once on real Prometheus and VictoriaMetrics: an interrupted window completed after a
restart, a new pipeline's catch-up on Prometheus, two services racing on one SQLite file.
Samples are read back raw (VictoriaMetrics ``/api/v1/export``, a Prometheus range selector),
so a duplicate or a gap shows."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from pydantic import SecretStr

from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryPipelineStore,
    RecordingDispatcher,
)
from openanomaly.adapters.prometheus.remote_write import READBACK_SETTLE, RemoteWriteWriter
from openanomaly.adapters.prometheus.samples import PrometheusSampleReader
from openanomaly.bootstrap import bootstrap
from openanomaly.domain.records import InferResult, InferWindow, OutputSeries
from openanomaly.domain.spec import Pipeline
from openanomaly.domain.windows import due_window
from openanomaly.errors import TsdbUnavailable
from openanomaly.ports import MetricsWriter
from openanomaly.services.service import Service
from openanomaly.settings import Settings
from tests.servers import TsdbServer, start_victoriametrics

pytestmark = pytest.mark.integration

STEP = 60
Raw = dict[tuple[str, str, int], list[float]]  # (output, host, ts) -> every stored value


class CrashingWriter:
    """Sends the first half of the series of its ``crash_at``-th write, then fails: a process
    killed in the middle of a window's write."""

    def __init__(self, inner: RemoteWriteWriter, crash_at: int) -> None:
        self.inner, self.crash_at, self.calls = inner, crash_at, 0

    def write(self, series: Sequence[OutputSeries]) -> int:
        self.calls += 1
        if self.calls < self.crash_at:
            return self.inner.write(series)
        self.inner.write(series[: len(series) // 2])
        raise TsdbUnavailable("killed mid-write (injected)")

    def oldest_accepted(self) -> int | None:
        return self.inner.oldest_accepted()


def infer(svc: Service, window: InferWindow | None, *, wait: float = 0.0) -> InferResult:
    """Run an inference job; its result (the type checker cannot tell it from a training's)."""
    assert window is not None
    result = svc.run(window, wait=wait)
    assert isinstance(result, InferResult)
    return result


@pytest.fixture
def opened() -> Iterator[ExitStack]:
    """Closes, after the test, every client and store the test opened."""
    with ExitStack() as stack:
        yield stack


def seed_input(server: TsdbServer, metric: str, minutes: int = 50, n: int = 6) -> None:
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - minutes * STEP, now + 1, STEP)
    rng = np.random.default_rng(5)
    series = [
        OutputSeries({"__name__": metric, "host": f"h{i}"}, ts, 100 + rng.normal(0, 2, ts.size))
        for i in range(n)
    ]
    writer = RemoteWriteWriter(server.write_url, flavor=server.flavor)
    writer.write(series)
    writer.close()
    server.flush()


def pipeline(pid: str, metric: str, **infer: str) -> Pipeline:
    spec = {"every": "5m", "context": "10m", "delay": "1s", "max_catchup": "30m", **infer}
    return Pipeline.model_validate({"id": pid, "query": metric, "step": "1m", "infer": spec})


def service(
    server: TsdbServer,
    db: Path,
    p: Pipeline,
    opened: ExitStack,
    writer: MetricsWriter | None = None,
) -> Service:
    """A service as ``bootstrap`` builds it from settings: the real TSDB and SQLite store;
    several on one ``db`` are processes sharing a database."""
    settings = Settings(
        tsdb={"url": server.url, "write_url": server.write_url, "flavor": server.flavor},
        database_url=SecretStr(f"sqlite:///{db}"),
    )
    c = bootstrap(
        settings,
        writer=writer,
        pipelines=MemoryPipelineStore([p]),
        artifacts=MemoryArtifactStore(),
        engines=MemoryEngineFactory(),
        dispatcher=RecordingDispatcher(),
    )
    return opened.enter_context(c).service


def raw(server: TsdbServer, pid: str) -> Raw:
    """Every stored output sample of pipeline ``pid``, duplicates kept."""
    server.flush()
    selector = f'{{pipeline="{pid}"}}'
    out: Raw = {}
    if server.flavor == "victoriametrics":
        r = httpx.get(f"{server.url}/api/v1/export", params={"match[]": selector}, timeout=30)
        r.raise_for_status()
        for line in r.content.splitlines():
            item = orjson.loads(line)
            for t, v in zip(item["timestamps"], item["values"], strict=True):
                key = (item["metric"]["__name__"], item["metric"]["host"], t // 1000)
                out.setdefault(key, []).append(v)
        return out
    r = httpx.post(
        f"{server.url}/api/v1/query",
        data={"query": f"{selector}[3h]", "time": str(time.time())},
        timeout=30,
    )
    r.raise_for_status()
    for item in r.json()["data"]["result"]:
        for t, v in item["values"]:
            key = (item["metric"]["__name__"], item["metric"]["host"], int(t))
            out.setdefault(key, []).append(float(v))
    return out


def once(samples: Raw) -> dict[tuple[str, str, int], float]:
    counts = Counter({k: len(v) for k, v in samples.items()})
    assert samples and max(counts.values()) == 1, counts.most_common(3)
    return {k: v[0] for k, v in samples.items()}


def service_due(p: Pipeline, now: float) -> InferWindow:
    window = due_window(p, None, now)
    assert window is not None
    return window


def test_a_window_interrupted_mid_write_is_completed_exactly_once(
    tsdb: TsdbServer, tmp_path: Path, opened: ExitStack
) -> None:
    metric = f"oa_eo_{uuid.uuid4().hex[:8]}"
    seed_input(tsdb, metric)
    calm, hurt = pipeline("calm-" + metric[6:], metric), pipeline("hurt-" + metric[6:], metric)
    now = time.time()
    service(tsdb, tmp_path / "calm.db", calm, opened).run(service_due(calm, now))
    inner = opened.enter_context(closing(RemoteWriteWriter(tsdb.write_url, flavor=tsdb.flavor)))
    writer = CrashingWriter(inner, crash_at=3)  # reader and read-back from the settings
    with pytest.raises(TsdbUnavailable):
        service(tsdb, tmp_path / "hurt.db", hurt, opened, writer).run(service_due(hurt, now))
    tsdb.flush()
    restarted = service(tsdb, tmp_path / "hurt.db", hurt, opened)
    assert restarted.checkpoints.state(hurt.id).pending is not None
    result = infer(restarted, service_due(hurt, now))
    assert result.recovered == 1
    expected = once(raw(tsdb, calm.id))
    got = once(raw(tsdb, hurt.id))
    assert got == expected  # the values of the undisturbed run
    assert len(got) == 4 * 6 * 30  # 4 outputs x 6 series x the 30 steps of the catch-up


def test_a_new_pipelines_catchup_on_prometheus_skips_only_what_is_too_old(
    prometheus: TsdbServer, tmp_path: Path, opened: ExitStack
) -> None:
    metric = f"oa_eo_{uuid.uuid4().hex[:8]}"
    seed_input(prometheus, metric, minutes=58)
    p = pipeline("late-" + metric[6:], metric, every="1m", context="5m", max_catchup="1h")
    svc = service(prometheus, tmp_path / "late.db", p, opened)
    window = svc.due_infer(p.id)
    assert window is not None and window.end - window.start == 3600
    result = infer(svc, window)
    assert svc.checkpoints.last_end(p.id) == window.end  # not stuck
    assert result.skipped["too_old"] >= 5 * 6  # the oldest minutes, all 6 series
    got = once(raw(prometheus, p.id))
    horizon = int(time.time()) - 3600
    assert min(t for _, _, t in got) > horizon
    assert max(t for _, _, t in got) == window.end


def test_two_services_on_one_database_write_each_window_once(
    tsdb: TsdbServer, tmp_path: Path, opened: ExitStack
) -> None:
    metric = f"oa_eo_{uuid.uuid4().hex[:8]}"
    seed_input(tsdb, metric)
    p = pipeline("race-" + metric[6:], metric)
    services = [service(tsdb, tmp_path / "shared.db", p, opened) for _ in range(2)]
    window = services[0].due_infer(p.id)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(svc: Service) -> None:
        barrier.wait()
        try:
            infer(svc, window, wait=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(once(raw(tsdb, p.id))) == 4 * 6 * 30


def test_read_back_sees_what_was_just_written_on_a_default_victoriametrics(
    tmp_path: Path, opened: ExitStack
) -> None:
    # Production VictoriaMetrics keeps its 30 s -search.latencyOffset and its ~1 s ingestion
    # buffer: the read-back must still see a sample written a moment ago at "now".
    server = start_victoriametrics(tmp_path, latency_offset="")
    try:
        now = int(time.time())
        ts = np.arange(now - 240, now + 1, STEP)
        written = OutputSeries(
            {"__name__": "oa_eo_fresh", "pipeline": "x"}, ts, ts.astype(np.float64)
        )
        writer = opened.enter_context(
            closing(RemoteWriteWriter(server.write_url, flavor="victoriametrics"))
        )
        writer.write([written])
        reader = opened.enter_context(
            closing(PrometheusSampleReader(server.url, settle=READBACK_SETTLE["victoriametrics"]))
        )
        got = reader.timestamps('{__name__="oa_eo_fresh"}', now - 300, now)
        assert [t.tolist() for t in got.values()] == [ts.tolist()]
    finally:
        server.stop()
