"""The image's health check (deploy/docker/healthcheck.py) asks each role for its own endpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "deploy" / "docker" / "healthcheck.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oa_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENTRY = ["/app/.venv/bin/python3", "/app/.venv/bin/openanomaly"]


@pytest.mark.parametrize(
    ("args", "env", "url"),
    [
        (["run", "--pipelines", "p.yaml"], {}, "http://127.0.0.1:8080/healthz"),
        (["api"], {"OA_API__PORT": "9000"}, "http://127.0.0.1:9000/healthz"),
        (["worker", "--queues", "infer"], {}, "http://127.0.0.1:9101/healthz"),
        (["beat"], {"OA_HEALTH_PORT": "9200"}, "http://127.0.0.1:9200/healthz"),
        (["beat"], {"OA_HEALTH_PORT": "0"}, None),
        (["serve-model"], {}, "http://127.0.0.1:8765/v1/health"),
        (["serve-model", "--port", "9999"], {}, "http://127.0.0.1:9999/v1/health"),
        (
            ["serve-model", "--port=9998"],
            {"OA_MODEL_SERVER__PORT": "1"},
            "http://127.0.0.1:9998/v1/health",
        ),
        (["train", "p"], {}, None),
        ([], {}, None),
    ],
)
def test_each_role_is_asked_for_its_own_endpoint(
    script: ModuleType, args: list[str], env: dict[str, str], url: str | None
) -> None:
    assert script.health_url([*ENTRY, *args, ""], env) == url


def test_a_process_that_is_not_openanomaly_serves_nothing(script: ModuleType) -> None:
    assert script.health_url(["/bin/sh", "-c", "sleep 1"], {}) is None
    assert script.role_of(["python", "-m", "openanomaly.cli", "--version", "worker"]) == (
        "worker",
        [],
    )
