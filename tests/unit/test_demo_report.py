"""The demo's report says which flagged series were injected and which are false positives,
with scores precise enough to read "just above 1" as flagged."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
INJECTED = {"host-00002": "a spike", "host-00005": "a level shift"}


def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_injected_first_then_false_positives_normal_series_left_out() -> None:
    peaks = {"host-00000": 1.0371, "host-00001": 0.8, "host-00002": 3.4721, "host-00005": 1.0004}
    lines, found_all = demo().verdicts(peaks, INJECTED)
    assert found_all
    assert [line.split()[:4] for line in lines[:3]] == [
        ["host-00002", "peak", "score", "3.472"],
        ["host-00005", "peak", "score", "1.000"],
        ["host-00000", "peak", "score", "1.037"],
    ]
    assert lines[0].endswith("found: injected a spike")
    assert lines[1].endswith("found: injected a level shift")
    assert lines[2].endswith("false positive: nothing was injected")
    assert lines[3] == "2 of 2 injected anomalies found, 1 false positive."
    assert len(lines) == 4


def test_a_missed_anomaly_is_listed_with_its_score_and_fails_the_demo() -> None:
    peaks = {"host-00002": 2.5, "host-00005": 0.95}
    lines, found_all = demo().verdicts(peaks, INJECTED)
    assert not found_all
    assert lines[1].split()[3] == "0.950"
    assert lines[1].endswith("MISSED: injected a level shift")
    assert lines[-1] == "1 of 2 injected anomalies found, 0 false positives."


def test_an_injected_series_without_any_score_is_missed() -> None:
    lines, found_all = demo().verdicts({"host-00002": 2.5}, INJECTED)
    assert not found_all
    assert "no score" in lines[1]
    assert "MISSED" in lines[1]
