"""Bad input is refused where it is written, with a message naming the field; what still fails
at run time marks its pipeline broken, and the other pipelines run on."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from fastapi.testclient import TestClient

from openanomaly.adapters.config.yaml_file import validate_file
from openanomaly.adapters.memory import MemoryEngineFactory, MemoryMetrics
from openanomaly.adapters.schedule.aps import ApsScheduler
from openanomaly.api.app import create_app
from openanomaly.bootstrap import Container
from openanomaly.domain.cron import cron_problem
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import ModelSpec, Pipeline
from openanomaly.domain.text import mask_url, shorten
from openanomaly.engines import DefaultEngineFactory
from openanomaly.errors import ConfigError, EngineNotInstalled, QueryError
from openanomaly.services.validation import PipelineValidator, check_range
from openanomaly.settings import Settings
from tests.unit.test_api import NOW, fake_container


def problems(**spec: object) -> dict[str, str]:
    pipeline = Pipeline.model_validate({"id": "p", "query": "up", **spec})
    found = PipelineValidator(DefaultEngineFactory()).problems(pipeline)
    return {".".join(loc): message for loc, message in found}


# -- the checks ----------------------------------------------------------------------------------


def test_a_runnable_pipeline_has_no_problems() -> None:
    assert problems(model={"name": "profile", "params": {"season": "1d"}}) == {}


def test_an_unknown_engine_is_named_with_the_known_ones() -> None:
    found = problems(model={"engine": "statsforcast"})
    assert list(found) == ["model.engine"]
    assert "unknown engine 'statsforcast'" in found["model.engine"]
    assert "statsforecast" in found["model.engine"]


def test_an_unknown_model_name_is_reported_on_the_name() -> None:
    found = problems(model={"engine": "builtin", "name": "nosuch"})
    assert list(found) == ["model.name"] and "nosuch" in found["model.name"]


def test_an_unknown_parameter_is_named_with_the_accepted_ones() -> None:
    found = problems(model={"name": "profile", "params": {"seasn": 10}})
    assert list(found) == ["model.params"]
    assert "seasn" in found["model.params"] and "season" in found["model.params"]


def test_a_missing_extra_is_reported_with_the_extra_to_install() -> None:
    engines = MemoryEngineFactory()
    engines.refused["chronos"] = EngineNotInstalled("chronos", "chronos")
    pipeline = Pipeline(id="p", query="up", model=ModelSpec(engine="chronos"))

    [(loc, message)] = PipelineValidator(engines).problems(pipeline)

    assert loc == ("model", "engine") and "openanomaly[chronos]" in message


@pytest.mark.parametrize(
    "cron", ["99 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 7", "*/0 * * * *"]
)
def test_a_cron_out_of_range_is_refused_as_the_scheduler_would(cron: str) -> None:
    with pytest.raises(ValueError):
        CronTrigger.from_crontab(cron, timezone="UTC")
    assert "train.cron" in problems(train={"cron": cron})


@pytest.mark.parametrize(
    "cron", ["0 3 * * *", "*/15 * * * *", "0 0-23/6 * * mon-fri", "5,35 * 1 jan,jul sun"]
)
def test_a_valid_cron_is_accepted_as_the_scheduler_accepts_it(cron: str) -> None:
    CronTrigger.from_crontab(cron, timezone="UTC")
    assert cron_problem(cron) is None


def test_a_window_too_long_for_its_step_is_refused() -> None:
    found = problems(step="1s", train={"window": "30d"})
    assert "2,592,000 steps" in found["train.window"]


def test_a_range_is_checked_before_anything_is_allocated() -> None:
    with pytest.raises(ConfigError, match="more than the limit"):
        check_range(946_684_800, NOW, 60)  # infer --from 2000-01-01
    check_range(NOW - 86400, NOW, 60)


def test_the_pipeline_file_check_reports_the_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(
        textwrap.dedent("""
        pipelines:
          - id: good
            query: up
          - id: bad
            query: up
            model: {engine: builtin, name: profile, params: {foo: 1}}
            train: {cron: "99 * * * *"}
        """).lstrip()
    )
    found = validate_file(path, check=PipelineValidator(DefaultEngineFactory()))
    assert len(found) == 2
    assert found[0] == (
        f"{path}:6: pipelines[1].model.params: builtin model 'profile' has no parameter 'foo'; "
        "accepted: season, smooth, adapt, memory, onset, spread_floor"
    )
    assert found[1].startswith(f"{path}:7: pipelines[1].train.cron: minute: '99' is out of")


# -- credentials and long queries ----------------------------------------------------------------


def test_credentials_are_masked_whatever_the_scheme() -> None:
    assert mask_url("htp://user:pw@host:9090/x") == "htp://user:***@host:9090/x"
    assert mask_url("https://tok3n@host/") == "https://***@host/"
    assert mask_url("http://host/api?x=a@b") == "http://host/api?x=a@b"


def test_a_mistyped_tsdb_url_does_not_echo_its_password() -> None:
    with pytest.raises(ConfigError) as exc:
        from openanomaly.settings import load_settings

        load_settings(tsdb={"url": "htp://user:hunter2@host"})
    assert "hunter2" not in str(exc.value) and "user:***@host" in str(exc.value)


def test_long_queries_are_cut_in_messages() -> None:
    assert shorten("x" * 10_000) == "x" * 199 + "…"
    assert shorten("up") == "up"


# -- the API -------------------------------------------------------------------------------------


@pytest.fixture
def container() -> Iterator[Container]:
    engines = MemoryEngineFactory()
    engines.refused["gone"] = EngineNotInstalled("gone", "gone")
    with fake_container(Settings(api={"max_body_bytes": 4096}), engines=engines) as c:
        yield c


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as tc:
        yield tc


GOOD = {"id": "good", "query": "m", "step": "1m", "train": {"window": "1h"}}


def test_the_api_refuses_a_pipeline_that_cannot_run_naming_the_field(client: TestClient) -> None:
    r = client.put("/api/v1/pipelines/p", json={**GOOD, "id": "p", "model": {"engine": "gone"}})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "model.engine" in message and "openanomaly[gone]" in message
    r = client.put("/api/v1/pipelines/p", json={**GOOD, "id": "p", "train": {"cron": "99 * * * *"}})
    assert r.status_code == 422 and "train.cron" in r.json()["error"]["message"]
    assert client.get("/api/v1/pipelines").json() == []


def test_bodies_over_the_limit_are_refused_before_being_read(client: TestClient) -> None:
    big = {**GOOD, "query": "m" * 5000}
    assert client.put("/api/v1/pipelines/good", json=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"id": "good", "query": "'
        for _ in range(10):
            yield b"m" * 1000
        yield b'"}'

    r = client.put(
        "/api/v1/pipelines/good", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "4096 bytes" in r.json()["error"]["message"]
    assert client.put("/api/v1/pipelines/good", json=GOOD).status_code == 200


def test_a_pipeline_failing_at_run_time_is_broken_and_the_others_run(
    container: Container, client: TestClient
) -> None:
    assert client.put("/api/v1/pipelines/good", json=GOOD).status_code == 200
    # Stored before its engine's extra was uninstalled: the store's own put is not checked.
    stored = container.service.pipelines
    stored.inner.put(Pipeline(id="bad", query="m", model=ModelSpec(engine="gone")))  # type: ignore[attr-defined]

    assert client.post("/api/v1/pipelines/bad/train").status_code == 202
    assert client.post("/api/v1/pipelines/good/train").status_code == 202

    status = client.get("/api/v1/pipelines/bad/status").json()
    assert not status["ok"] and "openanomaly[gone]" in status["broken"]
    assert client.get("/api/v1/pipelines/good/status").json()["ok"]
    metrics = client.get("/metrics").text
    assert 'openanomaly_pipeline_broken{pipeline="bad"} 1.0' in metrics
    assert 'openanomaly_pipeline_broken{pipeline="good"} 0.0' in metrics


def test_a_query_the_tsdb_refuses_breaks_only_its_pipeline() -> None:
    class Refusing(MemoryMetrics):
        def query_range(
            self, query: str, start: int, end: int, step: int, *, recent: bool = False
        ) -> SeriesBatch:
            if query.startswith("sum("):
                raise QueryError(f"parse error (query: {query})")
            return super().query_range(query, start, end, step)

    c = fake_container(Settings(), tsdb=Refusing)
    c.service.pipelines.put(Pipeline.model_validate(GOOD))
    c.service.pipelines.put(Pipeline.model_validate({**GOOD, "id": "bad", "query": "sum("}))

    c.service.run_logged(c.service.train_job("bad"))
    c.service.run_logged(c.service.train_job("good"))

    assert c.service.health.broken() == {"bad": "train: parse error (query: sum()"}
    assert c.service.registry.active("good") is not None


def test_the_scheduler_starts_with_a_pipeline_it_cannot_schedule(container: Container) -> None:
    store = container.service.pipelines.inner  # type: ignore[attr-defined]
    store.put(Pipeline.model_validate(GOOD))
    store.put(Pipeline.model_validate({**GOOD, "id": "cron", "train": {"cron": "99 * * * *"}}))
    store.put(Pipeline.model_validate({**GOOD, "id": "gone", "model": {"engine": "gone"}}))
    scheduler = ApsScheduler(container.service, container.dispatcher)

    scheduler.start()
    try:
        jobs = {job.id for job in scheduler._aps.get_jobs()}
    finally:
        scheduler.stop()

    assert {"infer:good", "train:good"} <= jobs
    assert not {j for j in jobs if j.endswith((":cron", ":gone"))}
    broken = container.service.health.broken()
    assert set(broken) == {"cron", "gone"}
    assert "99" in broken["cron"] and "openanomaly[gone]" in broken["gone"]
