"""``/readyz`` against a real VictoriaMetrics: ready while it runs, 503 naming it once stopped."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from openanomaly.adapters.memory import RecordingDispatcher
from openanomaly.api.app import create_app
from openanomaly.bootstrap import bootstrap
from openanomaly.settings import Settings
from tests.servers import start_victoriametrics


def test_readyz_reports_a_stopped_tsdb(tmp_path: Path) -> None:
    (tmp_path / "vm").mkdir()
    server = start_victoriametrics(tmp_path / "vm")
    settings = Settings(
        tsdb={"url": server.url, "read_retries": 0},
        database_url=SecretStr(f"sqlite:///{tmp_path / 'openanomaly.db'}"),
    )
    try:
        with (
            bootstrap(settings, dispatcher=RecordingDispatcher()) as c,
            TestClient(create_app(c)) as client,
        ):
            up = client.get("/readyz")
            server.stop()
            down = client.get("/readyz")
    finally:
        server.stop()

    assert up.status_code == 200
    assert up.json() == {
        "status": "ok",
        "checks": {"tsdb": {"status": "ok"}, "store": {"status": "ok"}},
    }
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    tsdb = down.json()["checks"]["tsdb"]
    assert (tsdb["status"], tsdb["error"]) == ("down", "TsdbUnavailable")
    assert server.url.removeprefix("http://") in tsdb["detail"]
    assert down.json()["checks"]["store"] == {"status": "ok"}
