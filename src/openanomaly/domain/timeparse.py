"""Times as users type them on the command line: ``now``, ``-2h``, unix seconds, ISO 8601."""

from __future__ import annotations

import time
from datetime import UTC, datetime

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
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
