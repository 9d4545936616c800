"""The SQL store as ModelRegistry: every version of a pipeline's model, and which is active."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import sqlalchemy as sa

from openanomaly.adapters.config.sql.base import SqlBase, insert_new, upsert
from openanomaly.adapters.config.sql.schema import active_models, model_versions
from openanomaly.domain.records import ModelVersion
from openanomaly.errors import NotFound

_VERSION_COLUMNS = [c for c in model_versions.c if c.name != "seq"]


class SqlRegistry(SqlBase):
    """Model versions are not tied to the pipelines table: the registry also serves pipelines
    kept in a YAML file, and a deleted pipeline keeps its history."""

    def record(self, version: ModelVersion, *, activate: bool = True) -> None:
        """Add ``version`` (and make it active) in one transaction.

        Recording a version the pipeline already has replaces it, and it becomes the newest: a
        retried train job refits the same window under the same version id.
        """
        row = dataclasses.asdict(version) | {"extra": json.dumps(version.extra, sort_keys=True)}
        same = model_versions.delete().where(
            model_versions.c.pipeline_id == version.pipeline_id,
            model_versions.c.version == version.version,
        )
        with self._tx(write=True) as conn:
            conn.execute(same)
            # False only when a concurrent retry of the same job recorded it first (PostgreSQL):
            # its row describes the same fit, so it stands.
            insert_new(conn, model_versions, row)
            if activate:
                _set_active(conn, version.pipeline_id, version.version)

    def active(self, pipeline_id: str) -> ModelVersion | None:
        joined = model_versions.join(
            active_models,
            sa.and_(
                active_models.c.pipeline_id == model_versions.c.pipeline_id,
                active_models.c.version == model_versions.c.version,
            ),
        )
        query = (
            sa.select(*_VERSION_COLUMNS)
            .select_from(joined)
            .where(active_models.c.pipeline_id == pipeline_id)
        )
        with self._tx() as conn:
            row = conn.execute(query).first()
        return None if row is None else _model_version(row)

    def versions(self, pipeline_id: str) -> list[ModelVersion]:
        query = (
            sa.select(*_VERSION_COLUMNS)
            .where(model_versions.c.pipeline_id == pipeline_id)
            .order_by(model_versions.c.seq.desc())
        )
        with self._tx() as conn:
            return [_model_version(row) for row in conn.execute(query)]

    def activate(self, pipeline_id: str, version: str) -> None:
        exists = sa.select(model_versions.c.seq).where(
            model_versions.c.pipeline_id == pipeline_id, model_versions.c.version == version
        )
        with self._tx(write=True) as conn:
            if conn.scalar(exists) is None:
                raise NotFound("model version", f"{pipeline_id}/{version}")
            _set_active(conn, pipeline_id, version)


def _set_active(conn: sa.Connection, pipeline_id: str, version: str) -> None:
    upsert(conn, active_models, {"pipeline_id": pipeline_id}, {"version": version})


def _model_version(row: sa.Row[Any]) -> ModelVersion:
    values = dict(row._mapping)
    values["extra"] = json.loads(values["extra"])
    return ModelVersion(**values)
