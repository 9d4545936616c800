"""The MongoDB store as CheckpointStore and LeaseStore: a pipeline's lease, checkpoint and
journalled window are the fields of its one ``windows`` document, so every fenced write is one
conditional update naming the owner (a checkpoint's, which also clears the journal, is an
update with an aggregation pipeline: MongoDB 4.2 or later)."""

from __future__ import annotations

from typing import Any

from pymongo import errors as mongo_errors

from openanomaly.adapters.config.mongo.base import MongoBase, upsert
from openanomaly.domain.records import WindowState
from openanomaly.errors import PipelineBusy, StoreError


class MongoWindows(MongoBase):
    # -- CheckpointStore -----------------------------------------------------------------------

    def last_end(self, pipeline_id: str) -> int | None:
        return self.state(pipeline_id).last_end

    def begin(self, pipeline_id: str, start: int, end: int, *, owner: str | None = None) -> None:
        journal = {"pending": [start, end], "journal_owner": owner or "", "begun_at": self._clock()}
        with self._use() as db:
            if owner is None:
                upsert(db.windows.update_one, {"_id": pipeline_id}, {"$set": journal})
            elif not db.windows.update_one(
                {"_id": pipeline_id, "owner": owner}, {"$set": journal}
            ).matched_count:
                raise PipelineBusy(pipeline_id, self.state(pipeline_id).owner)

    def advance(self, pipeline_id: str, end: int, *, owner: str | None = None) -> None:
        # One update (an aggregation pipeline, MongoDB 4.2+): the checkpoint's maximum and the
        # clearing of a journalled window it passes land together, fenced by the owner in the
        # filter, so that no takeover (nor crash) falls between them.
        passed = {"$lte": [{"$arrayElemAt": ["$pending", 1]}, end]}
        moved = [
            {
                "$set": {
                    "last_end": {"$max": ["$last_end", end]},
                    "pending": {"$cond": [passed, None, "$pending"]},  # null: none (``state``)
                }
            }
        ]
        with self._use() as db:
            if owner is None:
                upsert(db.windows.update_one, {"_id": pipeline_id}, moved)
            elif not db.windows.update_one(
                {"_id": pipeline_id, "owner": owner}, moved
            ).matched_count:
                raise PipelineBusy(pipeline_id, self.state(pipeline_id).owner)

    def state(self, pipeline_id: str) -> WindowState:
        with self._use() as db:
            doc = db.windows.find_one({"_id": pipeline_id}) or {}
        pending = doc.get("pending")
        return WindowState(
            pipeline_id,
            last_end=None if doc.get("last_end") is None else int(doc["last_end"]),
            pending=None if pending is None else (int(pending[0]), int(pending[1])),
            owner=doc.get("owner"),
            expires=None if doc.get("expires_at") is None else float(doc["expires_at"]),
        )

    # -- LeaseStore ----------------------------------------------------------------------------

    def acquire(
        self, pipeline_id: str, owner: str, ttl: float, *, replace: str | None = None
    ) -> bool:
        now = self._clock()
        takeable: list[dict[str, Any]] = [
            {"owner": owner},
            {"owner": None},  # free: never held, or released
            {"expires_at": {"$lt": now}},
        ]
        if replace is not None:
            takeable.append({"owner": replace})
        try:
            with self._use() as db:
                db.windows.find_one_and_update(
                    {"_id": pipeline_id, "$or": takeable},
                    {"$set": {"owner": owner, "expires_at": now + ttl}},
                    upsert=True,
                )
        except StoreError as exc:
            # The filter missed an existing document (held by another): the upsert's insert
            # collides with its _id. Of two racers, one takes it, the other lands here.
            if isinstance(exc.__cause__, mongo_errors.DuplicateKeyError):
                return False
            raise
        return True

    def release(self, pipeline_id: str, owner: str) -> None:
        # A document that holds only the lease (a job's claim on its work: one per window) is
        # deleted, or the collection would keep one for every window ever claimed; a pipeline's
        # keeps its checkpoint and journal.
        lease_only = {"_id": pipeline_id, "owner": owner, "last_end": {"$exists": False}}
        with self._use() as db:
            if db.windows.delete_one(lease_only | {"pending": {"$exists": False}}).deleted_count:
                return
            db.windows.update_one(
                {"_id": pipeline_id, "owner": owner}, {"$unset": {"owner": "", "expires_at": ""}}
            )

    def holder(self, pipeline_id: str) -> str | None:
        live = {"_id": pipeline_id, "expires_at": {"$gte": self._clock()}}
        with self._use() as db:
            doc = db.windows.find_one(live, {"owner": 1}) or {}
        owner = doc.get("owner")
        return None if owner is None else str(owner)
