import logging
from pathlib import Path

import pytest

from openanomaly.errors import ConfigError
from openanomaly.settings import load_settings, mask_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("OA_"):
            monkeypatch.delenv(key)


def test_defaults_are_standalone() -> None:
    s = load_settings()
    assert (s.config_store, s.artifact_store, s.dispatcher, s.scheduler) == (
        "sqlite",
        "local",
        "inline",
        "apscheduler",
    )
    assert s.tsdb.remote_write_url == "http://127.0.0.1:8428/api/v1/write"


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


def test_max_series_defaults_to_200k_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().tsdb.max_series == 200_000
    monkeypatch.setenv("OA_TSDB__MAX_SERIES", "0")
    with pytest.raises(ConfigError, match=r"tsdb.max_series \(OA_TSDB__MAX_SERIES\)"):
        load_settings()
    monkeypatch.setenv("OA_TSDB__MAX_SERIES", "1000000")
    assert load_settings().tsdb.max_series == 1_000_000
