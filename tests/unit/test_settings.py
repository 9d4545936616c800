import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from openanomaly.bootstrap import bootstrap, model_server
from openanomaly.domain.text import mask_url
from openanomaly.errors import ConfigError
from openanomaly.settings import Settings, TlsSettings, TsdbSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("OA_"):
            monkeypatch.delenv(key)


def test_defaults_are_standalone() -> None:
    s = load_settings()
    assert (s.config_store, s.artifact_store) == ("sqlite", "local")
    assert s.tsdb.remote_write_url == "http://127.0.0.1:8428/api/v1/write"


def test_cluster_settings_that_cannot_work_are_refused_naming_what_is_missing() -> None:
    refused: dict[str, dict[str, Any]] = {
        "OA_CELERY__BROKER": {"dispatcher": "celery"},
        "OA_CELERY__REDBEAT_URL": {
            "dispatcher": "celery",
            "scheduler": "redbeat",
            "celery": {"broker": "amqp://guest:guest@127.0.0.1//"},
        },
        "needs dispatcher=celery": {"scheduler": "redbeat"},
        "OA_S3__BUCKET": {"artifact_store": "s3"},
        "postgresql": {"config_store": "postgres"},
        "mongodb": {"config_store": "mongo", "database_url": "postgresql+psycopg://x@h/db"},
        "infer_soft_limit must be below": {"celery": {"infer_soft_limit": 300}},
    }
    for message, overrides in refused.items():
        with pytest.raises(ConfigError, match=message):
            load_settings(**overrides)
    s = load_settings(
        dispatcher="celery", scheduler="redbeat", celery={"broker": "redis://:pw@127.0.0.1/1"}
    )
    assert s.redbeat_url == "redis://:pw@127.0.0.1/1"  # the broker, being Redis
    assert "pw" not in str(s.describe()) and "pw" not in repr(s)


def test_tokens_periods_sizes_and_retries_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "OA_MODEL_SERVER__TOKEN": "srv-tok",
        "OA_MODEL_SERVER__STATE_KEY": "state-key-0123456789",
        "OA_MODEL_SERVER__PORT": "9999",
        "OA_REMOTE_ENGINE__TOKEN": "eng-tok",
        "OA_PIPELINE_SYNC_EVERY": "2.5",
        "OA_MODEL_CACHE_SIZE": "8",
        "OA_TSDB__READ_RETRIES": "0",
        "OA_TSDB__WRITE_BACKOFF": "1.5",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.model_server.token == SecretStr("srv-tok") and s.model_server.port == 9999
    assert s.remote_engine.token == SecretStr("eng-tok")
    assert (s.pipeline_sync_every, s.model_cache_size) == (2.5, 8)
    assert (s.tsdb.read_retries, s.tsdb.write_backoff) == (0, 1.5)
    shown = str(s.describe())
    assert "srv-tok" not in shown and "eng-tok" not in shown and "state-key" not in shown
    m = model_server(s)
    assert (m.token, m.state_key, m.port) == (s.model_server.token, s.model_server.state_key, 9999)


def test_bootstrap_hands_the_retry_settings_to_the_tsdb_adapters(tmp_path: Path) -> None:
    tsdb = {"read_retries": 0, "read_backoff": 0.1, "write_retries": 7, "write_backoff": 0.2}
    settings = Settings(tsdb=tsdb, database_url=SecretStr(f"sqlite:///{tmp_path / 'oa.db'}"))
    with bootstrap(settings) as c:
        assert (c.reader._attempts, c.reader._backoff) == (1, 0.1)  # type: ignore[attr-defined]
        assert (c.writer._attempts, c.writer._backoff) == (8, 0.2)  # type: ignore[attr-defined]


def test_env_wins_over_the_yaml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "oa.yaml"
    f.write_text("tsdb:\n  url: http://file:9090\n  flavor: prometheus\nworkers: 3\n")
    monkeypatch.setenv("OA_CONFIG_FILE", str(f))
    monkeypatch.setenv("OA_TSDB__URL", "http://env:8428")
    s = load_settings()
    assert s.tsdb.url == "http://env:8428"
    assert s.tsdb.flavor == "prometheus" and s.workers == 3


def test_bad_values_name_the_key_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OA_TSDB__FLAVOR", "influx")
    monkeypatch.setenv("OA_WORKERS", "0")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    text = str(exc.value)
    assert "tsdb.flavor (OA_TSDB__FLAVOR)" in text and "workers (OA_WORKERS)" in text


def test_unknown_key_in_file_and_broken_yaml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    f = tmp_path / "oa.yaml"
    f.write_text("tsdb:\n  urll: x\n")
    monkeypatch.setenv("OA_CONFIG_FILE", str(f))
    with pytest.raises(ConfigError, match=r"tsdb\.urll"):
        load_settings()
    f.write_text("tsdb: [\n")
    with pytest.raises(ConfigError, match=rf"{f}:\d+: not valid YAML"):
        load_settings()
    monkeypatch.setenv("OA_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_secrets_never_show(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OA_TSDB__USERNAME", "bob")
    monkeypatch.setenv("OA_TSDB__PASSWORD", "hunter2-pw")
    monkeypatch.setenv("OA_API__TOKEN", "tok-123456")
    monkeypatch.setenv("OA_TSDB__HEADERS", '{"X-Api-Key": "key-987"}')
    monkeypatch.setenv("OA_DATABASE_URL", "postgresql://oa:dbpass-1@db/oa")
    s = load_settings()
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("settings %s %r", s.describe(), s)
    shown = caplog.text + repr(s) + str(s.describe())
    for secret in ("hunter2-pw", "tok-123456", "key-987", "dbpass-1"):
        assert secret not in str(s.describe()) and secret not in caplog.text, secret
    assert "hunter2-pw" not in shown and "tok-123456" not in shown


def test_production_refuses_an_open_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OA_ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="OA_API__TOKEN"):
        load_settings()
    monkeypatch.setenv("OA_API__TOKEN", "t")
    assert load_settings().environment == "production"


def test_mask_url() -> None:
    assert mask_url("postgresql://oa:pw@db:5432/x") == "postgresql://oa:***@db:5432/x"
    assert mask_url("redis://:pw@r:6379/0") == "redis://:***@r:6379/0"
    assert mask_url("sqlite:///oa.db") == "sqlite:///oa.db"


def test_tsdb_secrets_never_appear_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    cfg = TsdbSettings(
        url="http://p:9090",
        username="u",
        password=SecretStr("hunter2"),
        headers={"X-Api-Key": SecretStr("k3y")},
    )
    bearer = TsdbSettings(url="http://p:9090", bearer_token=SecretStr("t0ken"))
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("config %s %r %s", cfg, cfg, bearer)
    for text in (repr(cfg), str(cfg), repr(bearer), caplog.text, str(cfg.model_dump())):
        assert "hunter2" not in text and "t0ken" not in text and "k3y" not in text


def test_tsdb_urls_are_checked_and_normalised() -> None:
    cfg = TsdbSettings(url="http://p:9090/")
    assert cfg.url == "http://p:9090"
    assert cfg.remote_write_url == "http://p:9090/api/v1/write"
    mimir = TsdbSettings(url="http://m/prometheus", write_url="http://m/api/v1/push")
    assert mimir.remote_write_url == "http://m/api/v1/push"
    with pytest.raises(ValidationError, match="http"):
        TsdbSettings(url="localhost:9090")
    with pytest.raises(ValidationError, match="credentials in the URL"):
        TsdbSettings(url="http://u:secret@p:9090")


def test_tsdb_auth_settings_must_be_consistent() -> None:
    with pytest.raises(ValidationError, match="not both"):
        TsdbSettings(
            url="http://p", username="u", password=SecretStr("x"), bearer_token=SecretStr("t")
        )
    with pytest.raises(ValidationError, match="password is set without username"):
        TsdbSettings(url="http://p", password=SecretStr("x"))
    with pytest.raises(ValidationError, match="key_file"):
        TlsSettings(key_file="/k.pem")


def test_tsdb_settings_are_immutable() -> None:
    cfg = TsdbSettings(url="http://p")
    with pytest.raises(ValidationError):
        cfg.url = "http://q"  # type: ignore[misc]


def test_max_series_defaults_to_200k_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().tsdb.max_series == 200_000
    monkeypatch.setenv("OA_TSDB__MAX_SERIES", "0")
    with pytest.raises(ConfigError, match=r"tsdb.max_series \(OA_TSDB__MAX_SERIES\)"):
        load_settings()
    monkeypatch.setenv("OA_TSDB__MAX_SERIES", "1000000")
    assert load_settings().tsdb.max_series == 1_000_000
