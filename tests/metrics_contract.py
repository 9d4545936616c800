"""The MetricsReader/MetricsWriter contract: what a store reads back of what was written.

``MetricsContract`` holds the tests; each tier subclasses it with a ``store`` fixture: the
in-memory fake in ``tests/unit/test_metrics_contract.py``, PrometheusReader and RemoteWriteWriter
against real Prometheus and VictoriaMetrics in ``tests/integration/test_metrics_contract.py``.
Every test writes series labelled with its own random ``run`` id, within the last half hour
(a fresh Prometheus refuses samples more than an hour behind its newest one).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from openanomaly.domain.records import OutputSeries
from openanomaly.domain.series import FloatArray, IntArray, SeriesBatch, series_key
from openanomaly.errors import QueryError
from openanomaly.ports import MetricsReader, MetricsWriter

STEP = 60
POINTS = 30


@dataclass(frozen=True)
class Store:
    """One TSDB seen through both ports.

    Attributes:
        chunked: a reader of the same store that splits ranges into requests of 4 points
            (``max_points=4``); the fake has no such limit and reads the range at once.
        flush: makes what was just written visible to reads.
        parse_error: a phrase of the store's own message for unparsable PromQL.
    """

    reader: MetricsReader
    writer: MetricsWriter
    chunked: MetricsReader
    flush: Callable[[], None]
    parse_error: str


def by_key(batch: SeriesBatch) -> dict[str, FloatArray]:
    return dict(zip(batch.keys, batch.values, strict=True))


class MetricsContract:
    """The tests; a subclass provides the ``store`` fixture."""

    @pytest.fixture
    def run(self) -> str:
        return uuid.uuid4().hex[:12]

    @pytest.fixture
    def grid(self) -> IntArray:
        """The last ``POINTS`` multiples of ``STEP`` up to now."""
        now = int(time.time()) // STEP * STEP
        return np.arange(now - (POINTS - 1) * STEP, now + 1, STEP, dtype=np.int64)

    def read(self, store: Store, query: str, grid: IntArray) -> SeriesBatch:
        return store.reader.query_range(query, int(grid[0]), int(grid[-1]), STEP)

    def test_written_series_read_back_exactly(self, store: Store, run: str, grid: IntArray) -> None:
        rng = np.random.default_rng(7)
        many = [
            OutputSeries(
                {"__name__": "oa_it_many", "run": run, "i": str(i)},
                grid,
                np.round(rng.normal(100, 20, grid.size), 3),  # VM keeps ~12 significant digits
            )
            for i in range(300)
        ]
        sent = store.writer.write(many)
        store.flush()

        assert sent == 300 * POINTS
        batch = self.read(store, f'oa_it_many{{run="{run}"}}', grid)
        np.testing.assert_array_equal(batch.timestamps, grid)
        got = by_key(batch)
        assert len(got) == 300
        for s in many:
            assert s.labels in batch.labels
            np.testing.assert_array_equal(got[series_key(s.labels)], s.values)

    def test_label_sets_come_back_as_written_but_empty_values(
        self, store: Store, run: str, grid: IntArray
    ) -> None:
        labels = [
            {"__name__": "oa_it_labels", "run": run, "le": "+Inf", "path": '/a "b" \\c'},
            {"__name__": "oa_it_labels", "run": run, "le": "0.5", "city": "Zürich"},
            {"__name__": "oa_it_labels", "run": run, "le": "1", "empty": ""},
        ]
        store.writer.write([OutputSeries(x, grid, np.ones(grid.size)) for x in labels])
        store.flush()

        batch = self.read(store, f'oa_it_labels{{run="{run}"}}', grid)
        # PromQL treats an empty value as no label: such a label is not stored.
        want = [labels[0], labels[1], {k: v for k, v in labels[2].items() if k != "empty"}]
        assert sorted(batch.keys) == sorted(series_key(x) for x in want)
        assert all(x in batch.labels for x in want)
        one = self.read(store, f'oa_it_labels{{run="{run}", le="+Inf"}}', grid)
        assert one.labels == (labels[0],)

    def test_nan_values_are_gaps_when_read_back(
        self, store: Store, run: str, grid: IntArray
    ) -> None:
        values = np.arange(POINTS, dtype=float) * 1.5
        values[[0, 4, 5, 17]] = np.nan
        values[9] = np.inf
        labels = {"__name__": "oa_it_gappy", "run": run}
        nothing = {"__name__": "oa_it_gappy", "run": run, "all": "nan"}
        both = [OutputSeries(labels, grid, values), OutputSeries(nothing, grid, values * np.nan)]
        assert store.writer.write(both) == POINTS - 5
        store.flush()

        # A plain selector fills a gap from the previous sample (lookback); a 1 s window does not.
        batch = self.read(store, f'last_over_time(oa_it_gappy{{run="{run}"}}[1s])', grid)
        assert batch.labels == (labels,)  # a series of no finite value was never written
        expected = np.where(np.isfinite(values), values, np.nan)
        # The grid may begin at the first point with data (memory follows the data that exists)
        first = int(np.flatnonzero(np.isfinite(expected))[0])
        assert grid[0] <= batch.timestamps[0] <= grid[first]
        np.testing.assert_array_equal(batch.values[0], expected[grid >= batch.timestamps[0]])

    def test_the_grid_is_the_multiples_of_step_and_nothing_written_reads_empty(
        self, store: Store, run: str, grid: IntArray
    ) -> None:
        labels = {"__name__": "oa_it_grid", "run": run}
        store.writer.write([OutputSeries(labels, grid, grid / 60.0)])
        assert store.writer.write([]) == 0
        store.flush()

        start, end = int(grid[0]) - 17, int(grid[-1]) + 59  # off the grid on both sides
        batch = store.reader.query_range(f'oa_it_grid{{run="{run}"}}', start, end, STEP)
        np.testing.assert_array_equal(batch.timestamps, grid)
        np.testing.assert_array_equal(batch.values, [grid / 60.0])
        absent = store.reader.query_range(f'oa_it_grid{{run="{run}x"}}', start, end, STEP)
        assert len(absent) == 0

    def test_a_chunked_read_equals_one_read(self, store: Store, run: str, grid: IntArray) -> None:
        series = [
            OutputSeries(
                {"__name__": "oa_it_chunks", "run": run, "s": s}, grid[a:b], grid[a:b] / 60.0
            )
            for s, a, b in [("whole", 0, POINTS), ("early", 0, 8), ("late", 22, POINTS)]
        ]
        store.writer.write(series)
        store.flush()

        query = f'last_over_time(oa_it_chunks{{run="{run}"}}[1s])'
        one = self.read(store, query, grid)
        chunked = store.chunked.query_range(query, int(grid[0]), int(grid[-1]), STEP)
        assert len(one) == 3
        assert sorted(chunked.keys) == sorted(one.keys)
        for key, row in by_key(one).items():
            np.testing.assert_array_equal(by_key(chunked)[key], row)
        early = by_key(one)[series_key(series[1].labels)]
        assert np.isfinite(early[:8]).all() and np.isnan(early[8:]).all()

    def test_bad_promql_is_a_query_error_with_the_stores_message(
        self, store: Store, grid: IntArray
    ) -> None:
        with pytest.raises(QueryError, match=store.parse_error) as info:
            self.read(store, "sum(rate(x[5m])", grid)
        assert "sum(rate(x[5m])" in str(info.value)
        assert info.value.status in (400, 422)
