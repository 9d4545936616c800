"""Settings: ``OA_*`` environment variables over an optional YAML file (``OA_CONFIG_FILE``).

Nested keys use ``__`` in the environment: ``OA_TSDB__URL``, ``OA_API__TOKEN``. Nothing is read at
import time: call :func:`load_settings`. Secrets are ``SecretStr`` (masked in repr and logs);
URLs with a password are shown through :func:`mask_url`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from openanomaly.domain.text import mask_url
from openanomaly.errors import ConfigError


class _Section(BaseModel):
    # A refused value may hold a credential: errors name the field, never echo the input.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class TlsSettings(_Section):
    """TLS to the TSDB: ``verify`` the server's certificate (off only for a self-signed test
    server) against ``ca_file`` or the public CAs; ``cert_file`` and ``key_file`` (when the key
    is not inside the certificate) for mutual TLS."""

    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSettings:
        if self.key_file and not self.cert_file:
            raise ValueError("tls.key_file is set without tls.cert_file")
        return self


class TsdbSettings(_Section):
    """Where series are read (Prometheus HTTP API) and written (remote write), and how.

    Secrets are ``SecretStr`` and extra header values are left out of ``repr``, so printing or
    logging the settings never shows a credential.

    Attributes:
        url: base URL of the Prometheus HTTP API, e.g. ``http://localhost:9090``.
        write_url: remote-write endpoint; ``None`` means ``<url>/api/v1/write``.
        flavor: which TSDB it is (only VictoriaMetrics takes future samples); ``auto`` (the
            default) asks the server at start-up and logs what it found.
        username: basic-auth user.
        password: basic-auth password.
        bearer_token: sent as ``Authorization: Bearer ...`` (exclusive with basic auth).
        tls: certificate checks and client certificates.
        tenant: multi-tenant id (Mimir, Cortex, Thanos), sent as ``X-Scope-OrgID``.
        timeout: seconds to wait for a response (connecting waits at most 10 s).
        headers: extra headers sent with every request; values are secret (API keys...).
        max_points: most points per series in one read; longer ranges are split.
        read_parallelism: chunks of a long range read at once.
        write_batch_samples: most samples per remote-write request.
        read_retries / write_retries: retries after a 5xx, a 429 or a connection error.
        read_backoff / write_backoff: first retry delay in seconds, doubled at each retry.
    """

    url: str = "http://127.0.0.1:8428"
    write_url: str | None = None
    # One Literal, not a union: a bad value then names tsdb.flavor and lists every choice.
    flavor: Literal["auto", "prometheus", "victoriametrics", "mimir", "thanos"] = "auto"
    username: str | None = None
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    tls: TlsSettings = TlsSettings()
    tenant: str | None = None
    timeout: float = Field(default=30.0, gt=0)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    max_points: int = Field(11_000, ge=2)
    read_parallelism: int = Field(4, ge=1)
    write_batch_samples: int = Field(50_000, ge=1)
    # More series in one answer are refused before their arrays are built (~100 bytes of
    # memory per series and point); the cluster will shard larger pipelines.
    max_series: int = Field(200_000, ge=1)
    read_retries: int = Field(2, ge=0)
    read_backoff: float = Field(0.25, ge=0)
    write_retries: int = Field(5, ge=0)
    write_backoff: float = Field(0.5, ge=0)

    @field_validator("url", "write_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {mask_url(value)!r}")
        # A URL with user:password@ would print the secret in every log line and error.
        if parts.username or parts.password:
            raise ValueError("credentials in the URL would be logged; use username/password")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> TsdbSettings:
        if self.password is not None and not self.username:
            raise ValueError("password is set without username")
        if self.username and self.bearer_token is not None:
            raise ValueError("choose basic auth (username/password) or bearer_token, not both")
        return self

    @property
    def remote_write_url(self) -> str:
        """``write_url``, or the Prometheus/VictoriaMetrics default ``<url>/api/v1/write``."""
        return self.write_url or f"{self.url}/api/v1/write"


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: SecretStr | None = None
    # Bodies are counted as they arrive: a larger one is refused (413) before it is read whole.
    max_body_bytes: int = Field(1 << 20, ge=1024)


class ModelServerSettings(_Section):
    """``openanomaly serve-model``: where it listens, the token its clients must send, and the
    key that signs the fitted states it hands out (default: derived from the token; rotating
    the token then invalidates the states)."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: SecretStr | None = None
    state_key: SecretStr | None = None
    cache_size: int = Field(16, ge=1)  # loaded engines kept in memory


class RemoteEngineSettings(_Section):
    """The ``remote`` engine's side: the bearer token it sends to model servers."""

    token: SecretStr | None = None


class S3Settings(_Section):
    """The ``s3`` artifact store: AWS S3, or MinIO (or any S3 API) through ``endpoint_url``.
    Without keys, boto3's own chain is used (environment, instance role...)."""

    bucket: str | None = None
    prefix: str = "openanomaly/"
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None


class CelerySettings(_Section):
    """Cluster mode's tasks (``OA_DISPATCHER=celery``): queues, time limits, retries.

    Attributes:
        broker: the broker URL (``OA_CELERY__BROKER``): ``redis://``, ``amqp://``,
            ``sqla+sqlite:///file.db`` or ``mongodb://``.
        redbeat_url: the Redis that RedBeat keeps the schedule and its leader lock in
            (default: the broker, when it is Redis).
        queue_prefix: queues are ``<prefix>.train``, ``<prefix>.infer``, ``<prefix>.backtest``
            (and ``<prefix>.tick`` for the scheduler's ticks).
        *_soft_limit / *_hard_limit: seconds before a task is asked to stop, then killed.
        retries / retry_backoff: retries of a task after a TSDB outage; first delay, doubled.
        beat_lock_timeout: seconds a dead leader's lock lasts before a standby beat takes over.
        visibility_timeout: seconds Redis waits before it hands an unacknowledged message to
            another worker (a worker died with it); above every hard limit, or a task still
            running would run twice. None: the longest hard limit plus 300 s.
    """

    broker: SecretStr | None = None
    redbeat_url: SecretStr | None = None
    queue_prefix: str = Field("oa", pattern=r"^[a-z0-9_-]+$")
    train_soft_limit: float = Field(3300.0, gt=0)
    train_hard_limit: float = Field(3600.0, gt=0)
    infer_soft_limit: float = Field(240.0, gt=0)
    infer_hard_limit: float = Field(300.0, gt=0)
    backtest_soft_limit: float = Field(3300.0, gt=0)
    backtest_hard_limit: float = Field(3600.0, gt=0)
    retries: int = Field(5, ge=0)
    retry_backoff: float = Field(2.0, gt=0)
    beat_lock_timeout: float = Field(30.0, gt=0)
    visibility_timeout: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _limits(self) -> CelerySettings:
        for kind in ("train", "infer", "backtest"):
            if getattr(self, f"{kind}_soft_limit") >= getattr(self, f"{kind}_hard_limit"):
                raise ValueError(f"{kind}_soft_limit must be below {kind}_hard_limit")
        longest = max(self.train_hard_limit, self.infer_hard_limit, self.backtest_hard_limit)
        if self.visibility_timeout is not None and self.visibility_timeout <= longest:
            raise ValueError(
                f"visibility_timeout must exceed the longest hard limit ({longest:g} s), or a "
                "task still running would be handed to another worker"
            )
        return self


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
    model_server: ModelServerSettings = Field(default_factory=ModelServerSettings)
    remote_engine: RemoteEngineSettings = Field(default_factory=RemoteEngineSettings)
    # sqlite and postgres: the SQL store at database_url; mongo: MongoDB at database_url.
    config_store: Literal["sqlite", "yaml", "postgres", "mongo"] = "sqlite"
    # A SecretStr: a database URL may carry a password, and a repr must never show it.
    database_url: SecretStr = SecretStr("sqlite:///openanomaly.db")
    pipelines_file: Path | None = None
    artifact_store: Literal["local", "noop", "s3"] = "local"
    artifacts_dir: Path = Path("artifacts")
    s3: S3Settings = Field(default_factory=S3Settings)
    # threads: workers in this process; celery: tasks on a broker, run by `openanomaly worker`.
    dispatcher: Literal["threads", "celery"] = "threads"
    # apscheduler: in this process; redbeat: `openanomaly beat` processes, one leader.
    scheduler: Literal["apscheduler", "redbeat"] = "apscheduler"
    celery: CelerySettings = Field(default_factory=CelerySettings)
    # Runs (GET /api/v1/jobs, `openanomaly jobs`) older than this many days are pruned.
    job_history_days: float = Field(7.0, gt=0)
    # Where `openanomaly worker` and `openanomaly beat` serve /healthz and /metrics (0: none).
    health_port: int = Field(9101, ge=0, le=65535)
    workers: int = Field(4, ge=1, le=256)
    # Engines whose libraries `openanomaly worker` imports before its pool processes fork.
    preload_engines: list[str] = Field(default_factory=lambda: ["statsforecast"])
    # Seconds between the scheduler's re-reads of the pipeline store (API changes show up then).
    pipeline_sync_every: float = Field(10.0, gt=0)
    # Fitted models kept loaded per worker process, by (pipeline, version).
    model_cache_size: int = Field(64, ge=1)
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
        url = self.database_url.get_secret_value()
        if self.config_store == "postgres" and not url.startswith("postgresql"):
            raise ValueError("config_store=postgres needs a postgresql+psycopg:// database_url")
        if self.config_store == "mongo" and not url.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("config_store=mongo needs a mongodb:// database_url")
        if self.artifact_store == "s3" and not self.s3.bucket:
            raise ValueError("artifact_store=s3 needs s3.bucket (OA_S3__BUCKET)")
        if self.dispatcher == "celery" and self.celery.broker is None:
            raise ValueError("dispatcher=celery needs celery.broker (OA_CELERY__BROKER)")
        if self.scheduler == "redbeat":
            if self.dispatcher != "celery":
                raise ValueError("scheduler=redbeat needs dispatcher=celery")
            if self.redbeat_url is None:
                raise ValueError(
                    "scheduler=redbeat needs a Redis: celery.redbeat_url (OA_CELERY__REDBEAT_URL)"
                    " or a redis:// celery.broker"
                )
        if self.environment == "production" and self.api.token is None:
            raise ValueError(
                "environment=production refuses an API without a token: set OA_API__TOKEN"
            )
        return self

    @property
    def redbeat_url(self) -> str | None:
        """RedBeat's Redis: ``celery.redbeat_url``, else the broker when it is Redis."""
        if self.celery.redbeat_url is not None:
            return self.celery.redbeat_url.get_secret_value()
        broker = self.celery.broker.get_secret_value() if self.celery.broker else ""
        return broker if broker.startswith(("redis://", "rediss://")) else None

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
        for key in ("broker", "redbeat_url"):
            value = getattr(self.celery, key)
            if value is not None:
                data["celery"][key] = mask_url(value.get_secret_value())
        secrets = (
            ("tsdb", "password"),
            ("tsdb", "bearer_token"),
            ("api", "token"),
            ("model_server", "token"),
            ("model_server", "state_key"),
            ("remote_engine", "token"),
            ("s3", "access_key_id"),
            ("s3", "secret_access_key"),
        )
        for section, key in secrets:
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
