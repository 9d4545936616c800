"""The NAB benchmark's report: row-based headline for any category layout, and the files NAB's
own scorer reads (every row of the data file, 0 where nothing was scored)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bench._quality_report import FileRun, dump, nab, plots, report

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


def data_file(root: Path) -> tuple[Path, list[str]]:
    """A NAB-layout folder under ``root`` with one file ``kind/a.csv`` of ``N`` rows."""
    data = root / "data"
    (data / "kind").mkdir(parents=True)
    stamps = pd.date_range("2024-01-01", periods=N, freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    stamps = stamps.insert(150, stamps[140])  # a clock that stepped back, as in some NAB files
    stamps = stamps.delete(151)
    pd.DataFrame({"timestamp": stamps, "value": np.arange(N, dtype=float)}).to_csv(
        data / "kind" / "a.csv", index=False
    )
    return data, list(stamps)


def test_dump_writes_every_row_with_zero_where_nothing_was_scored(tmp_path: Path) -> None:
    data, stamps = data_file(tmp_path)
    score = np.full(N, np.nan)
    score[30:] = 0.5  # the learning period and a gap are not scored
    score[50] = np.nan
    assert dump([run("kind/a.csv", score, [])], tmp_path / "out", data) == 1
    back = pd.read_csv(tmp_path / "out" / "builtin_profile" / "kind" / "a.csv")
    assert list(back.columns) == ["timestamp", "value", "anomaly_score"]
    assert back["timestamp"].tolist() == stamps
    assert back["anomaly_score"].iloc[:30].eq(0.0).all() and back["anomaly_score"].iloc[50] == 0.0
    assert back["anomaly_score"].iloc[31] == 0.5


def test_plots_draw_each_run_with_a_band_and_write_its_band_per_row(tmp_path: Path) -> None:
    data, stamps = data_file(tmp_path)
    score = np.full(N, np.nan)
    score[30:] = 0.5
    score[120] = 3.0  # flagged, inside the window
    band = np.full((3, N), np.nan)
    band[:, 30:] = np.arange(N - 30, dtype=float) + np.array([[0.0], [-1.0], [1.0]])
    runs = [
        dataclasses.replace(run("kind/a.csv", score, [(110, 130)]), band=band),
        dataclasses.replace(run("kind/a.csv", score, []), engine="zscore"),  # no band kept
    ]
    assert plots(runs, tmp_path / "out", data) == 1
    folder = tmp_path / "out" / "builtin_profile" / "kind"
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv", "a.png"]
    assert (folder / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = pd.read_csv(folder / "a.csv")
    assert list(back.columns) == ["timestamp", "value", "yhat", "lower", "upper", "anomaly_score"]
    assert back["timestamp"].tolist() == stamps
    assert back.iloc[:30, 2:].isna().all().all()  # nothing scored: empty, not 0
    assert back.loc[31, ["yhat", "lower", "upper"]].tolist() == [1.0, 0.0, 2.0]
    assert back.loc[120, "anomaly_score"] == 3.0
    assert not (tmp_path / "out" / "zscore").exists()
