"""The NAB benchmark's path on one labelled file, through a real VictoriaMetrics: load, backtest,
remote-write the scores, read them back, score them with NAB's scorer. The file is a copy of one
NAB series (MIT licence, ``tests/data/nab/LICENSE.txt``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from bench._quality_report import nab
from bench.quality import load_corpus, run_file, write_corpus

from tests.servers import TsdbServer

DATA = Path(__file__).resolve().parents[1] / "data" / "nab"
FILE = "artificialWithAnomaly/art_daily_jumpsup.csv"


def test_one_nab_file_end_to_end(victoriametrics: TsdbServer) -> None:
    (file,) = load_corpus(DATA, [FILE])
    assert write_corpus(victoriametrics.write_url, [file]) == file.values.size
    victoriametrics.flush()
    run = run_file(victoriametrics.url, "builtin:profile", file, 0)
    scored = ~np.isnan(run.score)
    # Every row after the probationary period comes back from the TSDB with a score.
    assert scored[file.labels.probation + 1 :].mean() > 0.99
    assert not scored[: file.labels.probation].any()
    # The jump is found inside its window, and nothing else is flagged.
    ((left, right),) = file.labels.windows
    flagged = np.flatnonzero(np.nan_to_num(run.score) > 1)
    assert flagged.size and np.all((flagged >= left) & (flagged <= right))
    assert 50 < nab([run], 1.0) <= 100 and not math.isnan(nab([run], 1.0))
    # The band kept for the plots is the written one: a row read back above 1 lies outside it.
    assert run.band is not None
    yhat, lower, upper = run.band
    assert np.array_equal(np.isnan(yhat), ~scored)
    outside = (file.values > upper) | (file.values < lower)
    assert np.array_equal(outside[scored], run.score[scored] > 1)
