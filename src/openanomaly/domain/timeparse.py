"""Times as users type them on the command line: ``now``, ``-2h``, unix seconds, ISO 8601."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

from openanomaly.domain.durations import parse_duration


def parse_time(text: str, *, now: float | None = None) -> int:
    """Unix seconds for ``now``, ``now-2h`` / ``-2h``, ``1700000000`` or ``2026-11-21T10:00Z``."""
    now = time.time() if now is None else now
    s = text.strip()
    if s == "now":
        return int(now)
    rel = s.removeprefix("now")
    if rel.startswith("-"):
        return int(now) - parse_duration(rel[1:])
    if s.isdigit():
        return int(s)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use now, -2h, unix seconds or 2026-11-21T10:00:00Z)"
        ) from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())


def iso(ts: float) -> str:
    """RFC 3339 in UTC to the second: ``2026-11-21T10:00:00Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


TIME_FIELDS = frozenset(
    {"created_at", "train_start", "train_end", "start", "end"}
    | {"submitted_at", "started_at", "ended_at"}
)
"""The fields of the records (``ModelVersion``, ``InferResult``, ``JobRun``) that hold unix
seconds."""


def with_iso_times(record: Any) -> dict[str, Any]:
    """A record dataclass's fields for people and API bodies: its times as RFC 3339 (UTC, Z)."""
    return {
        k: iso(v) if k in TIME_FIELDS and v is not None else v
        for k, v in dataclasses.asdict(record).items()
    }
