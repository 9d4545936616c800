"""What a tick submits (``services/ticks.py``), shared by ApsScheduler and the Celery tick task,
and which RedBeat entries the pipelines need (``adapters/schedule/redbeat.py``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from openanomaly.adapters.celery import tasks
from openanomaly.adapters.celery.app import make_app
from openanomaly.adapters.memory import MemoryJobPlanner, RecordingDispatcher, RecordingTelemetry
from openanomaly.adapters.schedule.redbeat import EntrySpec, is_ours, poll_interval, wanted
from openanomaly.domain.records import InferWindow, TrainJob
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import NotFound, QueryError
from openanomaly.services import ticks
from openanomaly.settings import Settings


def pipeline(pid: str, **fields: object) -> Pipeline:
    spec = {"id": pid, "query": "m", "step": "10s", "infer": {"every": "30s"}}
    return Pipeline.model_validate(spec | fields)


def test_an_infer_tick_trains_first_when_needed_then_submits_the_due_window() -> None:
    window = InferWindow("a", 0, 60)
    planner = MemoryJobPlanner([pipeline("a")], untrained={"a"}, due={"a": window}, now=600)
    assert ticks.jobs_due(planner, "a", "infer") == [TrainJob("a", 600), window]
    planner.untrained.clear()
    assert ticks.jobs_due(planner, "a", "infer") == []  # the window was taken: nothing new
    assert ticks.jobs_due(planner, "a", "train") == [TrainJob("a", 600)]
    with pytest.raises(ValueError, match="infer"):
        ticks.jobs_due(planner, "a", "backtest")  # type: ignore[arg-type]


class FailingPlanner(MemoryJobPlanner):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def needs_training(self, pipeline_id: str) -> bool:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "counted", "reported"),
    [
        (NotFound("pipeline", "a"), False, False),  # deleted since the sync: not a failure
        (NotFound("model", "v1"), True, True),
        (QueryError("bad query"), True, True),
        (RuntimeError("bug"), True, False),
    ],
)
def test_a_failed_tick_submits_nothing_and_is_counted_and_reported(
    exc: Exception, counted: bool, reported: bool, caplog: pytest.LogCaptureFixture
) -> None:
    planner = FailingPlanner(exc)
    telemetry = RecordingTelemetry()
    caplog.set_level(logging.INFO)
    assert ticks.tick(planner, "a", "infer", telemetry=telemetry) == []
    assert telemetry.failed_stages == (["tick"] if counted else [])
    assert ("a" in planner.failures) is reported
    assert "inference tick" in caplog.text


def test_the_entries_of_the_enabled_pipelines() -> None:
    got = wanted(
        [
            pipeline("a", train={"every": "1h"}),
            pipeline("b", train={"cron": "0 3 * * *", "every": "1h"}),  # cron wins
            pipeline("c", train={"every": None}),  # trained on demand only
            pipeline("off", enabled=False),
        ]
    )
    assert got == {
        "infer:a": EntrySpec("a", "infer", every=30),
        "train:a": EntrySpec("a", "train", every=3600),
        "infer:b": EntrySpec("b", "infer", every=30),
        "train:b": EntrySpec("b", "train", cron="0 3 * * *"),
        "infer:c": EntrySpec("c", "infer", every=30),
    }
    assert got["infer:a"].options() == {"expires": 30.0}  # a stale infer tick is dropped
    assert got["train:a"].options() == {}  # a training is never dropped
    assert got["train:b"].schedule().hour == {3}
    assert got["infer:a"].schedule().run_every.total_seconds() == 30


def test_entry_names_and_the_poll() -> None:
    assert is_ours("infer:a") and is_ours("train:x.y")
    assert not is_ours("celery.backend_cleanup") and not is_ours("infer:")
    assert poll_interval(30) == 1.0 and poll_interval(2.5) == 0.5


# --- the Celery tick task, run eagerly on a worker's (fake) container -------------------------


@dataclass
class TickContainer:
    service: MemoryJobPlanner
    dispatcher: RecordingDispatcher


def test_the_tick_task_submits_what_the_service_says_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(dispatcher="celery", celery={"broker": SecretStr("memory://")})
    app = make_app(settings)
    app.conf.task_always_eager = True
    app.loader.import_default_modules()
    app.finalize()
    window = InferWindow("a", 0, 60)
    planner = MemoryJobPlanner([pipeline("a")], untrained={"a"}, due={"a": window}, now=600)
    dispatcher = RecordingDispatcher()
    monkeypatch.setattr(tasks._Process, "container", TickContainer(planner, dispatcher))
    tick = app.tasks["openanomaly.tick"]
    ids = tick.apply(args=("a", "infer")).get()
    assert dispatcher.submitted == [TrainJob("a", 600), window]  # trained first
    assert ids == [job.id for job in dispatcher.submitted]  # the ids the jobs run under
    assert tick.apply(args=("a", "infer")).get() == [dispatcher.submitted[-1].id]  # no window
    assert tick.apply(args=("a", "train")).get() == [dispatcher.submitted[-1].id]
    assert dispatcher.submitted[2:] == [TrainJob("a", 600), TrainJob("a", 600)]
    assert tick.apply(args=("a", "backtest")).get() == []  # not a tick: nothing submitted
    assert len(dispatcher.submitted) == 4
