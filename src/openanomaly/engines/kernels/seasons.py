"""Season lengths and other lengths in steps, given as steps or as durations (``"1d"``)."""

from __future__ import annotations

from openanomaly.domain.durations import parse_duration
from openanomaly.errors import EngineError


def season_steps(name: str, value: object, step: int) -> int:
    """A season length in steps; a duration string (``"1d"``) is converted with ``step``."""
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise EngineError(f"{name}: {exc}") from None
        if seconds % step:
            raise EngineError(f"{name} ({value}) must be a whole number of steps ({step}s)")
        value = seconds // step
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EngineError(f"{name} must be an integer >= 1 or a duration, got {value!r}")
    return value


__all__ = ["season_steps"]
