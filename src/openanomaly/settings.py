"""Settings: ``OA_*`` environment variables over an optional YAML file (``OA_CONFIG_FILE``).

Nested keys use ``__`` in the environment: ``OA_TSDB__URL``, ``OA_API__TOKEN``. Nothing is read at
import time: call :func:`load_settings`. Secrets are ``SecretStr`` (masked in repr and logs);
URLs with a password are shown through :func:`mask_url`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from openanomaly.adapters.prometheus.http import TsdbHttpConfig
from openanomaly.domain.text import mask_url
from openanomaly.errors import ConfigError

Flavor = Literal["prometheus", "victoriametrics", "mimir", "thanos"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TsdbSettings(TsdbHttpConfig):
    """Where series are read (Prometheus HTTP API) and written (remote write), and how."""

    url: str = "http://127.0.0.1:8428"
    flavor: Flavor = "victoriametrics"
    max_points: int = Field(11_000, ge=2)
    read_parallelism: int = Field(4, ge=1)
    write_batch_samples: int = Field(50_000, ge=1)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: SecretStr | None = None
    # Bodies are counted as they arrive: a larger one is refused (413) before it is read whole.
    max_body_bytes: int = Field(1 << 20, ge=1024)


class Settings(BaseSettings):
    """Every setting of an OpenAnomaly process."""

    model_config = SettingsConfigDict(
        env_prefix="OA_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    environment: Literal["development", "production"] = "development"
    tsdb: TsdbSettings = Field(default_factory=TsdbSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    config_store: Literal["sqlite", "yaml"] = "sqlite"
    # A SecretStr: a database URL may carry a password, and a repr must never show it.
    database_url: SecretStr = SecretStr("sqlite:///openanomaly.db")
    pipelines_file: Path | None = None
    artifact_store: Literal["local", "noop"] = "local"
    artifacts_dir: Path = Path("artifacts")
    dispatcher: Literal["inline"] = "inline"
    workers: int = Field(4, ge=1, le=256)
    scheduler: Literal["apscheduler"] = "apscheduler"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # On SIGTERM: queued windows are left to the checkpoint; the one running gets this long.
    shutdown_grace: float = Field(25.0, ge=0, le=3600)
    # Most steps one read may span (series x steps is what is allocated): a longer range is
    # refused with a message instead of failing with a MemoryError.
    max_range_steps: int = Field(500_000, ge=1000)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.config_store == "yaml" and self.pipelines_file is None:
            raise ValueError("config_store=yaml needs pipelines_file (OA_PIPELINES_FILE)")
        if self.environment == "production" and self.api.token is None:
            raise ValueError(
                "environment=production refuses an API without a token: set OA_API__TOKEN"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("OA_CONFIG_FILE")
        if path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def describe(self) -> dict[str, Any]:
        """The settings as shown in logs and the API: secrets and URL passwords masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.database_url.get_secret_value())
        data["tsdb"]["headers"] = {k: "***" for k in data["tsdb"]["headers"]}
        for section, key in (("tsdb", "password"), ("tsdb", "bearer_token"), ("api", "token")):
            if data[section][key] is not None:
                data[section][key] = "**********"
        return data


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; any problem is a ConfigError naming the key (``tsdb.flavor``) and the
    environment variable that sets it (``OA_TSDB__FLAVOR``)."""
    path = os.environ.get("OA_CONFIG_FILE")
    if path:
        _check_yaml_file(Path(path))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "settings"
            env = "OA_" + "__".join(str(p).upper() for p in err["loc"])
            lines.append(f"{key} ({env}): {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None


def _check_yaml_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"OA_CONFIG_FILE={path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError("the settings file must be a mapping", where=str(path))
