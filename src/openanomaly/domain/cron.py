"""A check of 5-field cron expressions (minute hour day month weekday), with the ranges the
scheduler accepts, so that a bad ``train.cron`` is refused where it is written."""

from __future__ import annotations

import re

_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "weekday": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 6),
)
_ITEM = re.compile(r"^(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\d+))?$")


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a valid 5-field cron expression, or None when it is."""
    parts = expr.split()
    if len(parts) != len(FIELDS):
        return f"cron needs 5 fields (minute hour day month weekday), got {len(parts)}: {expr!r}"
    for text, field in zip(parts, FIELDS, strict=True):
        for item in text.split(","):
            problem = _item_problem(item, *field)
            if problem:
                return f"{problem} in {expr!r}"
    return None


def _item_problem(item: str, name: str, low: int, high: int) -> str | None:
    m = _ITEM.match(item.lower())
    if m is None:
        return f"{name}: {item!r} is not a number, a range, '*' or a step"
    star, first, last, step = m.groups()
    if step is not None and int(step) < 1:
        return f"{name}: the step of {item!r} must be at least 1"
    if star:
        return None
    values = [_value(v, name) for v in (first, last) if v is not None]
    if any(v is None or not low <= v <= high for v in values):
        return f"{name}: {item!r} is out of range {low}-{high}"
    if len(values) == 2 and values[0] > values[1]:  # type: ignore[operator]
        return f"{name}: the range {item!r} runs backwards"
    return None


def _value(text: str, name: str) -> int | None:
    if text.isdigit():
        return int(text)
    names = _NAMES.get(name, [])
    return names.index(text) + (name == "month") if text in names else None
