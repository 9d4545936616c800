"""Shards on a real VictoriaMetrics: a pipeline split into 3 shards, each job run by its own
service (a process of its own over one SQLite database), one shard killed in the middle of a
window's write and restarted, writes exactly the samples of the unsharded run; read back raw
(``/api/v1/export``, duplicates kept)."""

from __future__ import annotations

import uuid
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.records import InferResult, InferWindow, JobRun
from openanomaly.domain.shards import shards
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import TsdbUnavailable
from tests.integration.test_exactly_once import (
    CrashingWriter,
    once,
    opened,
    pipeline,
    raw,
    seed_input,
    service,
)
from tests.servers import TsdbServer

pytestmark = pytest.mark.integration
__all__ = ["opened"]  # the fixture, imported for its use here


def test_three_shards_one_killed_mid_write_write_exactly_the_unsharded_samples(
    victoriametrics: TsdbServer, tmp_path: Path, opened: ExitStack
) -> None:
    tsdb, metric = victoriametrics, f"oa_sh_{uuid.uuid4().hex[:8]}"
    seed_input(tsdb, metric, n=12)
    whole = pipeline("whole-" + metric[6:], metric)
    split = pipeline("split-" + metric[6:], metric).model_copy(update={"shards": 3})
    db = tmp_path / "split.db"
    jobs = service(tsdb, db, split, opened).due_infer_jobs(split.id)
    assert [j.shard for j in jobs] == [0, 1, 2]
    assert len({(j.start, j.end) for j in jobs}) == 1
    # The reference: the unsharded run of the same window (the catch-up's start moves with the
    # clock, which may pass a 5-minute boundary between two calls on a loaded machine).
    reference = InferWindow(whole.id, jobs[0].start, jobs[0].end)
    service(tsdb, tmp_path / "whole.db", whole, opened).run(reference)
    inner = opened.enter_context(closing(RemoteWriteWriter(tsdb.write_url, flavor=tsdb.flavor)))
    with pytest.raises(TsdbUnavailable):  # shard 1's process dies in its third window's write
        service(tsdb, db, split, opened, CrashingWriter(inner, crash_at=3)).run(jobs[1])
    for job in (jobs[0], jobs[2]):  # the other shards, each in its own process, carry on
        service(tsdb, db, split, opened).run(job)
    tsdb.flush()
    restarted = service(tsdb, db, split, opened)
    assert restarted.checkpoints.state(f"{split.id}#1/3").pending is not None
    (again,) = restarted.due_infer_jobs(split.id)
    assert again.shard == 1
    result = restarted.run(again)
    assert isinstance(result, InferResult) and result.recovered == 1

    expected, got = once(raw(tsdb, whole.id)), once(raw(tsdb, split.id))
    end = jobs[0].end  # shard 1's restart may have gone on past it, with the clock
    assert {k: v for k, v in got.items() if k[2] <= end} == expected
    assert len(expected) == 4 * 12 * 30  # 4 outputs x 12 series x the 30 steps of the catch-up
    ends = [restarted.checkpoints.last_end(f"{split.id}#{i}/3") or 0 for i in range(3)]
    assert min(ends) >= jobs[0].end  # every shard up to date, the pipeline's roll-up with them
    assert restarted.checkpoints.last_end(split.id) == min(ends)


def test_shards_without_series_train_empty_models_and_write_nothing(
    victoriametrics: TsdbServer, tmp_path: Path, opened: ExitStack
) -> None:
    # Two series over six shards, read through the streamed shard decoder of a real TSDB.
    tsdb, metric = victoriametrics, f"oa_sh_{uuid.uuid4().hex[:8]}"
    seed_input(tsdb, metric, n=2)
    short = {"train": {"window": "40m"}}  # trained on the 50 seeded minutes: scores written
    whole = Pipeline.model_validate(pipeline("whole-" + metric[6:], metric).model_dump() | short)
    split = Pipeline.model_validate(
        pipeline("empty-" + metric[6:], metric).model_dump() | short | {"shards": 6}
    )
    labels = [{"__name__": metric, "host": f"h{i}"} for i in range(2)]
    empty = [s for s in shards(6) if not s.mask(labels).any()]
    assert len(empty) >= 4
    svc = service(tsdb, tmp_path / "split.db", split, opened)
    for training in svc.train_jobs(split.id):
        svc.run(training)  # no NoData
    for s in empty:
        version = svc.registry.active(s.key(split.id))
        assert version is not None and version.series == 0
    assert not svc.needs_training(split.id)
    jobs = svc.due_infer_jobs(split.id)
    for job in jobs:
        svc.run(job)
    plain = service(tsdb, tmp_path / "whole.db", whole, opened)
    plain.run(plain.train_job(whole.id))
    plain.run(InferWindow(whole.id, jobs[0].start, jobs[0].end))  # the shards' window
    runs: list[JobRun] = svc.runs.history.runs() if svc.runs.history is not None else []
    assert len(runs) == 12 and {r.status for r in runs} == {"ok"}
    tsdb.flush()
    expected, got = once(raw(tsdb, whole.id)), once(raw(tsdb, split.id))
    assert expected and got == expected
