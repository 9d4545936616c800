"""The NAB benchmark's report: row-based headline for any category layout, and the files NAB's
own scorer reads (every row of the data file, 0 where nothing was scored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bench._quality_report import FileRun, dump, nab, report

from openanomaly.quality.nab import Labels

N = 200


def run(name: str, score: np.ndarray, windows: list[tuple[int, int]]) -> FileRun:
    labels = Labels(N, np.array(windows, dtype=np.int64))
    return FileRun("builtin:profile", name, score, labels, 0.1, 1, 1.0, N)


def test_the_headline_counts_every_flagged_row_as_nab_does() -> None:
    score = np.zeros(N)
    score[100] = 5.0  # the window, at its left edge
    score[60:65] = 2.0  # five flagged rows outside it
    r = run("myCategory/a.csv", score, [(100, 119)])
    assert nab([r], 1.0) == pytest.approx(100 * (1.0 - 5 * 0.11 + 1) / 2, abs=1e-6)
    assert nab([r], 1.0, mode="edge") == pytest.approx(100 * (1.0 - 0.11 + 1) / 2, abs=1e-6)


def test_categories_come_from_the_files(capsys: pytest.CaptureFixture[str]) -> None:
    score = np.zeros(N)
    score[100] = 5.0
    runs = [run("oneKind/a.csv", score, [(100, 119)]), run("otherKind/b.csv", score, [])]
    report(runs, engines=["builtin:profile"])
    out = capsys.readouterr().out
    assert "oneKind" in out and "otherKind" in out and "all" in out


def test_dump_writes_every_row_with_zero_where_nothing_was_scored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "kind").mkdir(parents=True)
    stamps = pd.date_range("2024-01-01", periods=N, freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": stamps, "value": np.arange(N, dtype=float)}).to_csv(
        data / "kind" / "a.csv", index=False
    )
    score = np.full(N, np.nan)
    score[30:] = 0.5  # the learning period and a gap are not scored
    score[50] = np.nan
    assert dump([run("kind/a.csv", score, [])], tmp_path / "out", data) == 1
    back = pd.read_csv(tmp_path / "out" / "builtin_profile" / "kind" / "a.csv")
    assert list(back.columns) == ["timestamp", "value", "anomaly_score"]
    assert back["timestamp"].tolist() == list(stamps)
    assert back["anomaly_score"].iloc[:30].eq(0.0).all() and back["anomaly_score"].iloc[50] == 0.0
    assert back["anomaly_score"].iloc[31] == 0.5
