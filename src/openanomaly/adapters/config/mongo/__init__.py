"""Pipelines, model registry, checkpoints, leases, the window journal, job outcomes and the run
history in MongoDB (pymongo): every role the SQL store plays, for ``config_store=mongo``.

MongoDB gives atomicity per document, so what must be atomic lives in one document: a
pipeline's lease, checkpoint and journalled window are the fields of its ``windows`` document,
and every fenced write is a single ``update_one``/``find_one_and_update`` whose filter names
the owner (a process that lost the lease matches nothing and writes nothing). A lease is taken
by an upsert on the pipeline's id: of two racing processes one updates or inserts, the other's
insert hits the unique ``_id`` (``DuplicateKeyError``) and it gets False.

Tested against mongomock only (no MongoDB server can be had where it was written).
"""

from __future__ import annotations

from openanomaly.adapters.config.mongo.base import ERRORS, shown
from openanomaly.adapters.config.mongo.config import API_SOURCE, MongoConfig
from openanomaly.adapters.config.mongo.runs import MongoRuns
from openanomaly.adapters.config.mongo.windows import MongoWindows

__all__ = ["API_SOURCE", "ERRORS", "MongoStore", "shown"]


class MongoStore(MongoConfig, MongoWindows, MongoRuns):
    """SourcedPipelineStore, ModelRegistry, CheckpointStore, LeaseStore, OutcomeStore and
    JobHistory over one MongoDB database.

    Args:
        url: ``mongodb://user:pw@host/db`` (the database defaults to ``openanomaly``).
        client: A ``pymongo.MongoClient`` (or ``mongomock.MongoClient``) to use instead.
        database: The database name, overriding the URL's.
        clock: Unix time for ``updated_at`` and leases.
    """
