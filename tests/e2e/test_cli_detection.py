"""End to end through the CLI against each real TSDB: series with an injected spike and a level
shift are remote-written, a pipeline is trained and inferred with `openanomaly`, and the
written `anomaly_score` is read back by PromQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.synthetic import as_output, inject, seasonal_panel
from tests.servers import TsdbServer

pytestmark = pytest.mark.e2e

STEP = 5
SEASON = 600
HISTORY = 50 * 60  # Prometheus refuses samples older than ~1h behind its head: stay recent.
TRAIN_END_AGO = 15 * 60
WINDOW = 5 * 60


def oa(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "openanomaly"
    proc = subprocess.run(
        [str(cli), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"openanomaly {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def oa_env(tsdb: TsdbServer, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("OA_")},
        "OA_TSDB__URL": tsdb.url,
        "OA_TSDB__FLAVOR": tsdb.flavor,
        "OA_DATABASE_URL": f"sqlite:///{tmp_path / 'oa.db'}",
        "OA_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
    }


def test_injected_anomalies_score_above_one_normal_points_below(
    tsdb: TsdbServer, tmp_path: Path
) -> None:
    metric = f"e2e_{uuid.uuid4().hex[:10]}"
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - HISTORY, now + 1, STEP)
    n = ts.size
    panel = seasonal_panel(6, ts, period=SEASON, metric=metric, seed=11)
    spike = (1, n - 1 - 400 // STEP)
    shift = (3, n - 1 - 600 // STEP, n - 1 - 480 // STEP)
    panel, injected = inject(panel, spikes=[spike], shifts=[shift])
    # A gap longer than PromQL's 5-minute lookback (shorter ones are filled by the query).
    gap = slice(n - 100, n - 30)
    panel.values[4, gap] = np.nan
    with RemoteWriteWriter(tsdb.write_url, flavor=tsdb.flavor) as writer:
        writer.write(as_output(panel))
    tsdb.flush()

    pid = f"e2e-{metric[4:]}"
    (tmp_path / "p.yaml").write_text(
        f"pipelines:\n"
        f"  - id: {pid}\n"
        f"    query: {metric}\n"
        f"    step: {STEP}s\n"
        f"    train: {{window: 30m}}\n"
        f"    infer: {{every: {WINDOW}s, context: 10m}}\n"
        f"    model: {{engine: builtin, name: profile, params: {{season: {SEASON}s}}}}\n"
        f"    scoring: {{interval: 0.999}}\n"
    )
    env = oa_env(tsdb, tmp_path)
    assert "OK" in oa(env, "validate", str(tmp_path / "p.yaml")).stdout
    oa(env, "pipelines", "apply", str(tmp_path / "p.yaml"))
    train_end = now - TRAIN_END_AGO
    assert '"series": 6' in oa(env, "train", pid, "--end", str(train_end)).stdout
    for start in range(train_end, now, WINDOW):
        out = oa(env, "infer", pid, "--from", str(start), "--to", str(start + WINDOW)).stdout
        assert "6 series" in out
    tsdb.flush()
    status = oa(env, "status", pid).stdout
    listed = next(line for line in status.splitlines() if pid in line)
    assert " ok " in listed and "error" not in listed, status  # state, last train, last infer

    # last_over_time over one step: exactly the written samples, no lookback filling.
    query = f'last_over_time(anomaly_score{{pipeline="{pid}"}}[{STEP}s])'
    with PrometheusReader(tsdb.url) as reader:
        scores = reader.query_range(query, train_end + 1, now, STEP)
    assert len(scores) == 6
    assert {lb["source_metric"] for lb in scores.labels} == {metric}
    # Back onto the input's rows (instance host-0000i is row i) and time grid.
    s = np.full((6, n), np.nan)
    cols = np.searchsorted(ts, scores.timestamps)
    for lb, values in zip(scores.labels, scores.values, strict=True):
        s[int(lb["instance"].split("-")[1]), cols] = values

    assert s[spike] > 1, f"spike scored {s[spike]}"
    row, a, _ = shift
    assert np.nanmax(s[row, a : a + 3]) > 1, f"level shift onset scored {s[row, a : a + 3]}"
    anomalous = injected.mask(s.shape, settle=WINDOW // STEP)
    anomalous[4, gap.start :] = True  # PromQL fills the gap's start with a stale value
    bad = np.argwhere(~anomalous & (s >= 1))
    normal = s[~anomalous & np.isfinite(s)]
    assert normal.size > 800
    assert (normal < 1).mean() >= 0.99, f"normal >= 1 at {bad.tolist()}"
    beyond_lookback = slice(gap.start + 300 // STEP + 1, gap.stop)
    assert np.isnan(s[4, beyond_lookback]).all()  # missing input: no sample, no crash
    assert np.isfinite(s[4, gap.stop :]).all()  # and scoring resumes after it


def test_bad_input_gets_clear_errors_and_loses_nothing(
    victoriametrics: TsdbServer, tmp_path: Path
) -> None:
    env = oa_env(victoriametrics, tmp_path)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("pipelines:\n  - id: a\n    query: up\n   step: 1m\n")
    proc = oa(env, "validate", str(bad_yaml), check=False)
    assert proc.returncode == 1 and f"{bad_yaml}:4" in proc.stderr

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("pipelines:\n  - id: u\n    query: up\n    model: {name: nope}\n")
    proc = oa(env, "pipelines", "apply", str(unknown), check=False)  # refused where written
    assert proc.returncode == 2 and "unknown" in proc.stderr and "profile" in proc.stderr
    assert "Traceback" not in proc.stderr

    env_down = {**env, "OA_TSDB__URL": "http://127.0.0.1:9", "OA_TSDB__TIMEOUT": "2"}
    good = tmp_path / "good.yaml"
    good.write_text("pipelines:\n  - id: g\n    query: up\n")
    oa(env_down, "pipelines", "apply", str(good))
    proc = oa(env_down, "infer", "g", check=False)
    assert proc.returncode == 2 and "cannot reach" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = oa(env, "pipelines", "list")
    assert "u" in proc.stdout and "g" in proc.stdout  # nothing lost on the failures

    bad_query = tmp_path / "q.yaml"
    bad_query.write_text("pipelines:\n  - id: q\n    query: sum(rate(x[5m])\n")
    oa(env, "pipelines", "apply", str(bad_query))
    proc = oa(env, "infer", "q", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "q" in proc.stderr and "sum(rate(x[5m])" in proc.stderr


def test_backtest_cli_reports_writes_and_plots(victoriametrics: TsdbServer, tmp_path: Path) -> None:
    metric = f"bt_{uuid.uuid4().hex[:10]}"
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - HISTORY, now + 1, STEP)
    panel, _ = inject(
        seasonal_panel(3, ts, period=SEASON, metric=metric, seed=5), spikes=[(2, ts.size - 50)]
    )
    with RemoteWriteWriter(victoriametrics.write_url, flavor="victoriametrics") as writer:
        writer.write(as_output(panel))
    victoriametrics.flush()
    pid = f"bt-{metric[3:]}"
    (tmp_path / "p.yaml").write_text(
        f"pipelines:\n  - id: {pid}\n    query: {metric}\n    step: {STEP}s\n"
        f"    train: {{window: 30m, every: 10m}}\n    infer: {{every: 30s, context: 10m}}\n"
        f"    model: {{params: {{season: {SEASON}s}}}}\n    scoring: {{interval: 0.999}}\n"
    )
    env = oa_env(victoriametrics, tmp_path)
    oa(env, "pipelines", "apply", str(tmp_path / "p.yaml"))
    png = tmp_path / "bt.png"
    proc = oa(
        env,
        "backtest",
        pid,
        "--from",
        str(now - 900),
        "--to",
        str(now),
        "--write",
        "--plot",
        str(png),
    )
    assert 'instance="host-00002"' in proc.stdout
    assert "wrote" in proc.stdout and png.stat().st_size > 10_000
    victoriametrics.flush()
    with PrometheusReader(victoriametrics.url) as reader:
        written = reader.query_range(
            f'last_over_time(anomaly_score{{pipeline="{pid}"}}[{STEP}s])', now - 900 + 1, now, STEP
        )
    assert len(written) == 3 and np.isfinite(written.values).sum() == 3 * 900 // STEP
    spiked = next(i for i, lb in enumerate(written.labels) if lb["instance"] == "host-00002")
    assert np.nanmax(written.values[spiked]) > 1


def test_a_gitops_file_is_not_rewritten_by_the_cli(
    victoriametrics: TsdbServer, tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    text = "pipelines:\n  - {id: a, query: up}  # kept as written\n"
    path.write_text(text)
    env = oa_env(victoriametrics, tmp_path) | {
        "OA_CONFIG_STORE": "yaml",
        "OA_PIPELINES_FILE": str(path),
    }
    other = tmp_path / "other.yaml"
    other.write_text("pipelines:\n  - {id: b, query: up}\n")

    for args in (("pipelines", "delete", "a"), ("pipelines", "apply", str(other))):
        proc = oa(env, *args, check=False)
        assert proc.returncode != 0 and f"kept in {path}" in proc.stderr, proc.stderr
    assert path.read_text() == text
