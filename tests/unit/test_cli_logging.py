"""The CLI's logging: APScheduler's line per job run only at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from openanomaly.cli import _setup_logging


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("apscheduler", "httpx")]
    levels = [lg.level for lg in loggers]
    yield
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


@pytest.mark.parametrize(("level", "expected"), [("INFO", "WARNING"), ("DEBUG", "DEBUG")])
def test_apscheduler_job_lines_show_only_at_debug(level: str, expected: str) -> None:
    _setup_logging(level)

    jobs = logging.getLogger("apscheduler.executors.default")
    assert logging.getLevelName(jobs.getEffectiveLevel()) == expected
