"""Prometheus-style durations: ``30s``, ``5m``, ``1h30m``, ``14d``, ``1w``."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def parse_duration(text: str | int | float) -> int:
    """Seconds in a duration string; a bare number is seconds. Raises ValueError with the input."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = text.strip()
        if re.fullmatch(r"\d+(\.\d+)?", s):
            seconds = float(s)
        else:
            parts = _PART.findall(s)
            if not parts or "".join(n + u for n, u in parts) != s:
                raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h30m, 14d)")
            seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(f"duration must be a positive whole number of seconds: {text!r}")
    return int(seconds)


def format_duration(seconds: int) -> str:
    """The shortest string that :func:`parse_duration` reads back as ``seconds``."""
    out = []
    for unit in ("w", "d", "h", "m", "s"):
        n, seconds = divmod(seconds, int(_UNITS[unit]))
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0s"


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A pydantic field type: accepts ``"5m"`` or seconds, holds int seconds, dumps as ``"5m"``."""
