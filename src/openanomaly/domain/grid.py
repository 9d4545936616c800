"""The step grid every read, window and written sample sits on."""

from __future__ import annotations


def align(ts: float, step: int) -> int:
    """The last grid point at or before ``ts``."""
    return int(ts // step) * step
