"""Text that is echoed in logs and error messages: long queries cut, URL credentials masked,
phase timings."""

from __future__ import annotations

import re
from collections.abc import Mapping

_USERINFO = re.compile(r"(?<=//)([^/@\s]*)@")


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: a 100 MB query echoed in every
    error line would fill the log."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mask_url(url: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``; a bare token before ``@``
    (``scheme://token@host``) is masked whole. Works on any scheme, even a mistyped one."""

    def hide(m: re.Match[str]) -> str:
        user, sep, _ = m.group(1).partition(":")
        return f"{user}:***@" if sep else "***@"

    return _USERINFO.sub(hide, url)


def phases(timings: Mapping[str, float]) -> str:
    """``{"read": 1.234, "fit": 5.0}`` -> ``read=1.23s fit=5.00s``: where a job's time went, in
    its log line (a reader of worker logs, the scale bench, parses them as ``name=<s>s``)."""
    return " ".join(f"{name}={seconds:.2f}s" for name, seconds in timings.items())
