"""The SQL store as CheckpointStore and LeaseStore: where each pipeline's inference stands, the
journal of the window being written, and who may write it. Every write is one conditional
statement or a fenced transaction, so that processes sharing the database never move a
checkpoint backwards nor both hold a lease (SQLite: one writer at a time; PostgreSQL: row
locks under READ COMMITTED, a conditional UPDATE re-checked on the row it waited for)."""

from __future__ import annotations

import sqlalchemy as sa

from openanomaly.adapters.config.sql.base import SqlBase, fence, insert_new, upsert
from openanomaly.adapters.config.sql.schema import checkpoints, leases, window_journal
from openanomaly.domain.records import WindowState


class SqlWindows(SqlBase):
    # -- CheckpointStore -----------------------------------------------------------------------

    def last_end(self, pipeline_id: str) -> int | None:
        query = sa.select(checkpoints.c.last_end).where(checkpoints.c.pipeline_id == pipeline_id)
        with self._tx() as conn:
            value = conn.scalar(query)
        return None if value is None else int(value)

    def begin(self, pipeline_id: str, start: int, end: int, *, owner: str | None = None) -> None:
        row = {"window_start": start, "window_end": end, "owner": owner or ""}
        with self._tx(write=True) as conn:
            if owner is not None:
                fence(conn, leases, pipeline_id, owner)
            upsert(
                conn,
                window_journal,
                {"pipeline_id": pipeline_id},
                row | {"begun_at": self._clock()},
            )

    def advance(self, pipeline_id: str, end: int, *, owner: str | None = None) -> None:
        # The guard is in the UPDATE itself, so concurrent workers cannot move it backwards
        # between a read and a write.
        forward = (
            checkpoints.update()
            .where(checkpoints.c.pipeline_id == pipeline_id, checkpoints.c.last_end < end)
            .values(last_end=end)
        )
        exists = sa.select(checkpoints.c.last_end).where(checkpoints.c.pipeline_id == pipeline_id)
        done = window_journal.delete().where(
            window_journal.c.pipeline_id == pipeline_id, window_journal.c.window_end <= end
        )
        with self._tx(write=True) as conn:
            if owner is not None:
                fence(conn, leases, pipeline_id, owner)
            conn.execute(done)
            if conn.execute(forward).rowcount or conn.scalar(exists) is not None:
                return
            if not insert_new(conn, checkpoints, {"pipeline_id": pipeline_id, "last_end": end}):
                conn.execute(forward)  # another writer created it meanwhile: move it if behind

    def state(self, pipeline_id: str) -> WindowState:
        journal = sa.select(window_journal.c.window_start, window_journal.c.window_end).where(
            window_journal.c.pipeline_id == pipeline_id
        )
        lease = sa.select(leases.c.owner, leases.c.expires_at).where(
            leases.c.pipeline_id == pipeline_id
        )
        checkpoint = sa.select(checkpoints.c.last_end).where(
            checkpoints.c.pipeline_id == pipeline_id
        )
        with self._tx() as conn:
            last_end = conn.scalar(checkpoint)
            pending = conn.execute(journal).first()
            held = conn.execute(lease).first()
        return WindowState(
            pipeline_id,
            last_end=None if last_end is None else int(last_end),
            pending=None if pending is None else (int(pending[0]), int(pending[1])),
            owner=None if held is None else str(held[0]),
            expires=None if held is None else float(held[1]),
        )

    # -- LeaseStore ----------------------------------------------------------------------------

    def acquire(
        self, pipeline_id: str, owner: str, ttl: float, *, replace: str | None = None
    ) -> bool:
        now = self._clock()
        takeable = [leases.c.owner == owner, leases.c.expires_at < now]
        if replace is not None:
            takeable.append(leases.c.owner == replace)
        take = (
            leases.update()
            .where(leases.c.pipeline_id == pipeline_id, sa.or_(*takeable))
            .values(owner=owner, expires_at=now + ttl)
        )
        row = {"pipeline_id": pipeline_id, "owner": owner, "expires_at": now + ttl}
        with self._tx(write=True) as conn:
            # Exactly one of two racing processes updates the row, or inserts the missing one.
            return bool(conn.execute(take).rowcount) or insert_new(conn, leases, row)

    def release(self, pipeline_id: str, owner: str) -> None:
        mine = leases.delete().where(leases.c.pipeline_id == pipeline_id, leases.c.owner == owner)
        with self._tx(write=True) as conn:
            conn.execute(mine)

    def holder(self, pipeline_id: str) -> str | None:
        held = sa.select(leases.c.owner).where(
            leases.c.pipeline_id == pipeline_id, leases.c.expires_at >= self._clock()
        )
        with self._tx() as conn:
            owner = conn.scalar(held)
        return None if owner is None else str(owner)
