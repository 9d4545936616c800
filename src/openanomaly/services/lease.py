"""One process at a time runs a pipeline's windows: the lease a run holds while it writes.

The lease is a row in the database (``LeaseStore``) with an owner id and an expiry, renewed in
the background while the run lasts and released after it. The journal and the checkpoint are
fenced by it: a run that lost its lease (stalled past the expiry while another process took
over) can no longer commit.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from openanomaly.errors import PipelineBusy
from openanomaly.ports import LeaseStore

log = logging.getLogger(__name__)

_LIVE_OWNERS: set[str] = set()  # the owner ids of the Services of this process


def _pid_namespace() -> str:
    """The pid namespace of this process (Linux), so that a pid is only judged in its own."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def owner_id() -> str:
    """A lease owner id, ``host:pid:pid-namespace:random`` (pids are reused)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}:{uuid.uuid4().hex[:8]}"
    _LIVE_OWNERS.add(owner)
    return owner


def dead_owner(owner: str | None) -> bool:
    """Whether ``owner`` was a process of this host and pid namespace that is gone (``kill
    -9``): its lease need not be waited out. Any other owner (another host, another container)
    is only taken over when its lease expires."""
    parts = (owner or "").split(":")
    if len(parts) != 4 or owner in _LIVE_OWNERS or not parts[1].isdigit():
        return False
    host, pid, namespace = parts[0], int(parts[1]), parts[2]
    if host != socket.gethostname() or namespace in ("0", "") or namespace != _pid_namespace():
        return False
    if pid == os.getpid():
        return True  # our pid, not one of our owners: an earlier process that had it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@contextmanager
def holding(
    leases: LeaseStore,
    pipeline_id: str,
    owner: str,
    *,
    ttl: float,
    wait: float,
    holder: Callable[[], str | None],
) -> Iterator[None]:
    """Hold the pipeline's lease while the block runs, waiting up to ``wait`` seconds for it
    (``holder`` tells who has it); PipelineBusy when it stays taken."""
    deadline = time.monotonic() + wait
    while not leases.acquire(pipeline_id, owner, ttl):
        other = holder()
        if dead_owner(other) and leases.acquire(pipeline_id, owner, ttl, replace=other):
            log.warning("pipeline=%s: took over the lease of %s (gone)", pipeline_id, other)
            break
        if time.monotonic() >= deadline:
            raise PipelineBusy(pipeline_id, other)
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    done = threading.Event()
    renew = threading.Thread(
        target=_renew,
        args=(leases, pipeline_id, owner, ttl, done),
        name=f"lease-{pipeline_id}",
        daemon=True,
    )
    renew.start()
    try:
        yield
    finally:
        done.set()
        renew.join()
        leases.release(pipeline_id, owner)


def _renew(
    leases: LeaseStore, pipeline_id: str, owner: str, ttl: float, done: threading.Event
) -> None:
    while not done.wait(ttl / 3):
        try:
            if not leases.acquire(pipeline_id, owner, ttl):
                log.error("pipeline=%s: lease lost to another process", pipeline_id)
                return  # the fenced checkpoint refuses this run's next commit
        except Exception:  # a store hiccup: the next renewal may succeed before expiry
            log.exception("pipeline=%s: lease renewal failed", pipeline_id)
