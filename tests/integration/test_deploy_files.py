"""deploy/ checked by the real validators, and against the code.

Validators (dev dependencies, installed by ``scripts/setup``): Docker Compose's own ``config``
(it parses, interpolates and checks each file against the Compose Specification; it needs no
engine), hadolint on the Dockerfile, Helm's lint and renderer (Helm's Go SDK, through
helm-python-sdk: ``helm lint --strict`` and ``helm template``), and each rendered manifest against
the Kubernetes API's JSON schemas (kubernetes-validate, strict: an unknown field fails). No Docker
engine runs here: no image is built and no container is started.

Against the code: every ``OA_*`` variable the files set is a setting of
``openanomaly.settings.Settings`` and the sets of variables load (``load_settings``); every command
the containers run is a command of ``openanomaly`` with options it has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from openanomaly.cli import app
from openanomaly.settings import Settings, load_settings
from tests.servers import find_binary, free_port
from tests.unit.test_readme_settings import _env_names

INSTALL = "it is a dev dependency of pyproject.toml: scripts/setup (or uv sync) installs it"
try:
    import helm_python as helm
    import kubernetes_validate
except ImportError as exc:  # a validator missing fails every test here, naming the cure
    raise ImportError(f"{exc.name} is not installed: {INSTALL}") from exc

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
CHART = DEPLOY / "helm" / "openanomaly"
ENV_EXAMPLE = COMPOSE / ".env.example"
SETTINGS = _env_names(Settings)
# The brief's names of the cluster's entrypoints (`openanomaly api`, `worker [--queues ...]
# [--concurrency N]`, `beat`), added to cli.py by other branches. Until they are there the deploy
# files may name them; once there, their options are checked like the others'.
PLANNED = {"api": set(), "worker": {"--queues", "--concurrency"}, "beat": set()}
# Kubernetes versions the chart is rendered for: its kubeVersion's floor and the newest schema.
KUBE_VERSIONS = ("1.25", "1.37")


def _tool(name: str) -> str:
    """A validator's executable, from this environment's bin/ (where pip puts it) or PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL}", pytrace=False)
    return found


def _run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT, env=env
    )


# --- the CLI ---------------------------------------------------------------------------------


def _commands() -> dict[str, set[str]]:
    """``openanomaly``'s commands, each with its options' names."""
    # typer >= 0.26 carries its own click: its group is no click.Group, hence the getattr.
    group = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(group, "commands")  # noqa: B009
    return {
        name: {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
        for name, cmd in commands.items()
    }


def check_command(argv: list[str]) -> None:
    """``argv`` (what follows the ``openanomaly`` entrypoint) is a command it has, with options
    it has; the brief's planned commands are accepted until cli.py has them."""
    assert argv, "no command: the image's default (run) is meant to be named"
    name, options = argv[0], {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    commands = _commands()
    known = commands.get(name, PLANNED.get(name))
    assert known is not None, f"`openanomaly {name}` is no command (has: {sorted(commands)})"
    assert options <= known, f"`openanomaly {name}` has no option {sorted(options - known)}"


def test_the_command_check_refuses_what_the_cli_lacks() -> None:
    check_command(["run", "--pipelines", "x.yaml"])
    with pytest.raises(AssertionError, match="no command"):
        check_command(["serve"])
    with pytest.raises(AssertionError, match="no option"):
        check_command(["run", "--pipeline", "x.yaml"])


def check_settings(env: Mapping[str, Any], where: str) -> Settings:
    """Every ``OA_*`` name in ``env`` is a setting, and together they load."""
    names = {k for k in env if k.startswith("OA_")}
    assert names, f"{where}: no OA_* setting"
    assert sorted(names - SETTINGS) == [], f"{where}: not settings"
    values = {k: str(v) for k, v in env.items() if k.startswith("OA_") and v is not None}
    saved = {k: v for k, v in os.environ.items() if k.startswith("OA_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update(values)
        return load_settings()
    finally:
        for k in values:
            os.environ.pop(k, None)
        os.environ.update(saved)


# --- Dockerfile ------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), as (INSTRUCTION, rest)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_hadolint_passes_the_dockerfile() -> None:
    result = _run(_tool("hadolint"), "deploy/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_openanomaly_and_sets_only_settings() -> None:
    instructions = _dockerfile()
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    entrypoint = [json.loads(rest) for op, rest in final if op == "ENTRYPOINT"]
    cmd = [json.loads(rest) for op, rest in final if op == "CMD"]
    assert entrypoint == [["openanomaly"]]
    check_command(cmd[-1])
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for op, rest in final if op == "ENV")))
    check_settings(env, "Dockerfile ENV")
    assert any(op == "USER" and not rest.startswith(("0", "root")) for op, rest in final)
    assert any(op == "HEALTHCHECK" for op, _ in final)


def test_the_image_uv_reads_this_lock() -> None:
    """The image's uv is the minor version that wrote uv.lock (older ones may not read it)."""
    (tag,) = re.findall(r"ARG UV_IMAGE=\S+:(\d+\.\d+)\n", (DEPLOY / "Dockerfile").read_text())
    local = _run("uv", "--version").stdout.split()[1]
    assert local.startswith(tag + "."), f"the image has uv {tag}, the lock is written by {local}"


def _sync_plan(extras: str) -> str:
    env = {**os.environ, "EXTRAS": extras}
    result = _run("sh", "deploy/docker/sync.sh", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_image_takes_torch_only_for_a_torch_extra_and_then_the_cpu_build() -> None:
    assert os.access(DEPLOY / "docker" / "sync.sh", os.X_OK)  # the Dockerfile runs it as is
    default = _sync_plan("cluster")
    assert "torch" not in default and "--extra cluster" in default and "--no-dev" in default
    chronos = _sync_plan("cluster chronos")
    sync, pip = chronos.splitlines()
    assert "--no-install-package torch" in sync and "--no-install-package nvidia-cublas" in sync
    assert re.search(r"--index-url https://download.pytorch.org/whl/cpu torch==[\d.]+\+cpu$", pip)


def test_the_image_install_step_installs_the_cluster_extra_without_torch(tmp_path: Path) -> None:
    """The Dockerfile's install script run for real, outside Docker, from uv's cache only."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("UV_NO_SYNC", "VIRTUAL_ENV")}
    env |= {"EXTRAS": "cluster", "UV_PROJECT_ENVIRONMENT": str(venv), "UV_OFFLINE": "1"}
    result = _run("sh", "deploy/docker/sync.sh", "-q", env=env)
    assert result.returncode == 0, result.stderr
    assert _run(str(venv / "bin" / "openanomaly"), "--version").stdout.startswith("openanomaly")
    probe = "import importlib.util as u; print([m for m in ('torch', 'celery', 'redbeat', "
    probe += "'boto3', 'psycopg', 'pymongo') if u.find_spec(m)])"
    found = _run(str(venv / "bin" / "python"), "-c", probe).stdout.strip()
    assert found == "['celery', 'redbeat', 'boto3', 'psycopg', 'pymongo']"


@pytest.fixture
def health_server() -> Iterator[str]:
    """A loopback server answering /healthz with 200 and /readyz with 503."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_health_check_script_reads_the_status(health_server: str) -> None:
    script = (sys.executable, "deploy/docker/healthcheck.py")
    assert _run(*script, f"{health_server}/healthz").returncode == 0
    unready = _run(*script, f"{health_server}/readyz")
    assert unready.returncode == 1 and "503" in unready.stderr
    closed = f"http://127.0.0.1:{free_port()}/healthz"
    assert _run(*script, closed).returncode == 1


# --- docker compose --------------------------------------------------------------------------


def _compose(name: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    file = str(COMPOSE / f"{name}.yaml")
    # The variables come from the env file only, as on a machine with nothing exported.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OA_", "OPENANOMALY_"))}
    args = ("-f", file, "--env-file", str(env_file), "config", "--format", "json")
    return _run(_tool("docker-compose"), *args, env=env)


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def compose(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The file as Docker Compose resolves it, with the variables of .env.example."""
    result = _compose(request.param)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return request.param, config


def _oa_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: s
        for name, s in config["services"].items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    """No password is committed: without a .env the files name the one missing."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    for name, missing in (("standalone", "GRAFANA_ADMIN_PASSWORD"), ("cluster", "PASSWORD")):
        result = _compose(name, empty)
        assert result.returncode != 0
        assert missing in result.stderr and "deploy/compose/.env" in result.stderr


def test_every_service_has_a_healthcheck(compose: tuple[str, dict[str, Any]]) -> None:
    name, config = compose
    services = config["services"]
    one_shot = {
        dep
        for s in services.values()
        for dep, cond in s.get("depends_on", {}).items()
        if cond["condition"] == "service_completed_successfully"
    }
    for service, spec in services.items():
        if service in one_shot:
            assert spec.get("restart") == "no", f"{name}: {service} runs once"
            continue
        check = spec.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name}: {service}"


def test_compose_sets_only_settings_and_runs_only_commands(
    compose: tuple[str, dict[str, Any]],
) -> None:
    name, config = compose
    services = _oa_services(config)
    assert services, name
    for service, spec in services.items():
        env = spec["environment"]
        assert all(k.startswith("OA_") for k in env), f"{name}: {service} is set by OA_* only"
        check_settings(env, f"{name}: {service}")
        check_command(spec["command"])
        assert spec["healthcheck"]["test"][1] == "openanomaly-healthcheck"
    for service, spec in config["services"].items():
        stray = {k for k in spec.get("environment") or {} if k.startswith("OA_")} - SETTINGS
        assert not stray, f"{name}: {service}"


def test_every_file_a_service_mounts_is_in_the_repository(
    compose: tuple[str, dict[str, Any]],
) -> None:
    name, config = compose
    for service, spec in config["services"].items():
        for volume in spec.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {service}: {volume['source']}"


def test_victoriametrics_accepts_its_scrape_config(
    compose: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    """VictoriaMetrics' own dry run of the file it is given (strict: unknown fields fail)."""
    name, config = compose
    tsdb = config["services"]["victoriametrics"]
    (flag,) = (a for a in tsdb["command"] if a.startswith("-promscrape.config="))
    (mount,) = (v for v in tsdb["volumes"] if v["target"] == flag.split("=", 1)[1])
    binary = find_binary("victoria-metrics")
    args = (binary, f"-promscrape.config={mount['source']}", "-promscrape.config.dryRun")
    result = subprocess.run(
        (*args, "-loggerLevel=ERROR"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,  # where it would put its data
    )
    assert result.returncode == 0, f"{name}: {result.stderr}"


def _shell_scripts(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The shell scripts the services run (`sh -c SCRIPT`) and their health checks' CMD-SHELL,
    with Compose's `$$` as the `$` the container's shell sees."""
    for service, spec in config["services"].items():
        argv = [*(spec.get("entrypoint") or []), *(spec.get("command") or [])]
        for i, arg in enumerate(argv[:-1]):
            if Path(arg).name == "sh" and re.fullmatch(r"-e?c|-ec", argv[i + 1]):
                yield service, argv[i + 2]
        test = spec.get("healthcheck", {}).get("test") or [""]
        if test[0] == "CMD-SHELL":
            yield f"{service} (health check)", test[1]


def test_shellcheck_passes_the_shell_scripts(
    compose: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    name, config = compose
    scripts = {"deploy/docker/sync.sh": DEPLOY / "docker" / "sync.sh"}
    for service, script in _shell_scripts(config):
        path = tmp_path / f"{service.split()[0]}-{len(scripts)}.sh"
        path.write_text("#!/bin/sh\n" + script.replace("$$", "$") + "\n")
        scripts[f"{name}: {service}"] = path
    if name == "cluster":
        assert {"cluster: redis", "cluster: minio-init"} <= set(scripts)
    for where, path in scripts.items():
        result = _run(_tool("shellcheck"), "--shell=sh", str(path))
        assert result.returncode == 0, f"{where}:\n{result.stdout}"


def test_the_env_example_names_only_real_settings() -> None:
    names = re.findall(r"^(OA_\w+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    assert names and set(names) <= SETTINGS


def test_the_cluster_file_runs_the_cluster() -> None:
    result = _compose("cluster")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"victoriametrics", "redis", "postgres", "minio", "grafana"} <= set(services)
    assert services["api"]["command"] == ["api"]
    assert services["worker"]["command"][0] == "worker"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["beat"]["command"] == ["beat"]
    assert services["beat"]["deploy"]["replicas"] == 2
    settings = check_settings(services["worker"]["environment"], "cluster: worker")
    assert (settings.config_store, settings.artifact_store) == ("postgres", "s3")
    assert (settings.dispatcher, settings.scheduler) == ("celery", "redbeat")
    assert settings.database_url.get_secret_value().startswith("postgresql+psycopg://")
    assert settings.s3.endpoint_url == "http://minio:9000" and settings.health_port == 9101
    # The bucket OpenAnomaly writes to is the one minio-init makes.
    init = services["minio-init"]
    assert init["environment"]["S3_BUCKET"] == settings.s3.bucket
    assert "mc mb --ignore-existing" in init["command"][0]


def test_the_standalone_file_follows_a_valid_pipelines_file() -> None:
    result = _compose("standalone")
    assert result.returncode == 0, result.stderr
    oa = json.loads(result.stdout)["services"]["openanomaly"]
    assert oa["command"][:2] == ["run", "--pipelines"]
    (mount,) = (v for v in oa["volumes"] if v["target"] == oa["command"][2])
    assert Path(mount["source"]) == COMPOSE / "pipelines.yaml"
    validated = CliRunner().invoke(app, ["validate", mount["source"]])
    assert validated.exit_code == 0, validated.output


def test_grafana_is_provisioned_with_the_tsdb_and_the_dashboard(
    compose: tuple[str, dict[str, Any]],
) -> None:
    name, config = compose
    grafana = config["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources/victoriametrics.yaml").read_text())[
        "datasources"
    ]
    tsdb = config["services"]["victoriametrics"]
    assert source["url"] == "http://victoriametrics:8428" and "8428" in str(tsdb["ports"])
    (provider,) = yaml.safe_load((provisioning / "dashboards/openanomaly.yaml").read_text())[
        "providers"
    ]
    dashboards = mounts[provider["options"]["path"]]
    board = json.loads((dashboards / "openanomaly.json").read_text())
    queries = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for series in ("anomaly_score", "anomaly_pred", "anomaly_lower", "anomaly_upper"):
        assert series in queries, name
    assert {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]} == {
        source["uid"]
    }


# --- the Helm chart --------------------------------------------------------------------------

SECRETS = {
    "OA_DATABASE_URL": "postgresql+psycopg://oa:pw@postgres:5432/oa",
    "OA_CELERY__BROKER": "redis://:pw@redis:6379/0",
    "OA_API__TOKEN": "token",
    "OA_S3__ACCESS_KEY_ID": "key",
    "OA_S3__SECRET_ACCESS_KEY": "secret",
}
VALUES: dict[str, dict[str, Any]] = {
    "defaults": {"secrets": SECRETS},
    "gitops, an existing secret, two worker groups": {
        "existingSecret": "openanomaly-secrets",
        "pipelines": {"enabled": True, "file": (COMPOSE / "pipelines.yaml").read_text()},
        "workers": [
            {"name": "train", "replicas": 1, "queues": ["train", "backtest"], "concurrency": 1},
            {"name": "infer", "replicas": 3, "queues": ["infer", "tick"], "concurrency": 4},
        ],
    },
}


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="oa", namespace="monitoring", is_install=True)
    docs = []
    for path, text in rendered.items():
        if not path.endswith(".txt"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def test_helm_lint_passes_strict() -> None:
    for values in VALUES.values():
        report = helm.lint(CHART, values, strict=True)
        assert report["errors"] == [], report
        assert all(m["severity"] < 2 for m in report["messages"]), report  # no warning


def test_helm_lint_refuses_a_queue_that_does_not_exist() -> None:
    bad = [{"name": "x", "replicas": 1, "queues": ["fit"], "concurrency": 1}]
    report = helm.lint(CHART, {"workers": bad}, strict=True)
    assert any("/workers/0/queues/0" in e for e in report["errors"]), report


@pytest.fixture(scope="module", params=list(VALUES))
def manifests(request: pytest.FixtureRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = VALUES[request.param]
    return values, _render(values)


def test_rendered_manifests_match_the_kubernetes_schemas(
    manifests: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, docs = manifests
    for version in KUBE_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_finds_a_misspelt_field() -> None:
    (beat,) = (
        d
        for d in _by_kind(_render(VALUES["defaults"]), "Deployment")
        if d["metadata"]["name"] == "oa-openanomaly-beat"
    )
    beat["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(beat, KUBE_VERSIONS[-1], strict=True)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] == kind)


def test_the_chart_runs_the_api_workers_and_beats_with_their_probes(
    manifests: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = manifests
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in _by_kind(docs, "Deployment")
    }
    groups = values.get(
        "workers",
        [{"name": "default", "replicas": 2, "queues": ["train", "infer", "backtest", "tick"]}],
    )
    assert set(deployments) == {"api", "beat"} | {f"worker-{g['name']}" for g in groups}
    assert deployments["beat"]["spec"]["replicas"] == 2
    for component, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        check_command(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
        if component == "api":
            assert container["args"] == ["api"] and ports == {"http": 8080}
            assert (live["path"], ready["path"], live["port"]) == ("/healthz", "/readyz", "http")
        else:
            assert ports == {"health": 9101}
            assert live == ready == {"path": "/healthz", "port": "health"}
    for group in groups:
        worker = deployments[f"worker-{group['name']}"]
        assert worker["spec"]["replicas"] == group["replicas"]
        args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--queues") + 1] == ",".join(group["queues"])
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for d in _by_kind(docs, "PodDisruptionBudget")
    }
    assert budgets == set(deployments)
    (service,) = _by_kind(docs, "Service")
    assert service["spec"]["selector"] == deployments["api"]["spec"]["selector"]["matchLabels"]


def test_the_chart_sets_only_settings_and_they_load(
    manifests: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = manifests
    maps = {d["metadata"]["name"]: d["data"] for d in _by_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"]: d["stringData"] for d in _by_kind(docs, "Secret")}
    for deployment in _by_kind(docs, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "env" not in container  # everything through the ConfigMap and the Secret
        env: dict[str, str] = {}
        for source in container["envFrom"]:
            if "configMapRef" in source:
                env |= maps[source["configMapRef"]["name"]]
            else:
                name = source["secretRef"]["name"]
                assert name == values.get("existingSecret", name)
                env |= secrets.get(name, SECRETS)  # an existing Secret: the same keys
        settings = check_settings(env, deployment["metadata"]["name"])
        gitops = values.get("pipelines", {}).get("enabled", False)
        assert settings.config_store == ("yaml" if gitops else "postgres")
        if gitops:
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert (
                settings.pipelines_file is not None
                and str(settings.pipelines_file.parent) in mounts
            )
            (pipelines,) = (m for n, m in maps.items() if n.endswith("-pipelines"))
            assert pipelines["pipelines.yaml"] == values["pipelines"]["file"]
