#!/usr/bin/env python3
"""The image's health check: asks the process of this container for its health endpoint.

    openanomaly-healthcheck [URL]

With a URL, GETs it. Without one, reads the role from the command line of the container's main
process (PID 1: ``openanomaly ROLE ...``) and asks the endpoint that role serves:

    run, api          http://127.0.0.1:$OA_API__PORT/healthz   (8080)
    worker, beat      http://127.0.0.1:$OA_HEALTH_PORT/healthz (9101; 0 serves none)
    serve-model       http://127.0.0.1:$OA_MODEL_SERVER__PORT/v1/health (8765, or its --port)

Any other command (``train``, ``backtest``...) serves nothing, so it is healthy while it runs.
Exit 0 when healthy, 1 otherwise (what Docker's HEALTHCHECK reads). Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

API_ROLES = ("run", "api")
HEALTH_SERVER_ROLES = ("worker", "beat")


def role_of(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The subcommand of an ``openanomaly ...`` command line and the arguments after it."""
    for i, arg in enumerate(argv):
        if Path(arg).name == "openanomaly" or arg.endswith("openanomaly.cli"):
            rest = [a for a in argv[i + 1 :] if a]
            for j, word in enumerate(rest):
                if not word.startswith("-"):
                    return word, rest[j + 1 :]
            return None, []
    return None, []


def _option(args: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def health_url(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The endpoint the process started with ``argv`` serves, or None when it serves none."""
    role, args = role_of(argv)
    if role in API_ROLES:
        return f"http://127.0.0.1:{env.get('OA_API__PORT', '8080')}/healthz"
    if role in HEALTH_SERVER_ROLES:
        port = env.get("OA_HEALTH_PORT", "9101")
        return None if port == "0" else f"http://127.0.0.1:{port}/healthz"
    if role == "serve-model":
        port = _option(args, "--port") or env.get("OA_MODEL_SERVER__PORT", "8765")
        return f"http://127.0.0.1:{port}/v1/health"
    return None


def main(args: Sequence[str]) -> int:
    if args:
        url: str | None = args[0]
    else:
        argv = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
        url = health_url(argv, os.environ)
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:  # refused, timed out, or an HTTP error status
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
