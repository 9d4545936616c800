"""Model rollback: make an earlier version of a pipeline's model the active one.

The registry keeps every version and an active pointer; rolling back moves the pointer, and
nothing else: the artifact of each version is its own (versioned keys), the Inferencer's cache
is keyed by version, so its next window loads the version rolled back to. The scheduler trains
again only when no model fits the pipeline as it is now (``Service.needs_training``: the
active version's spec hash against the pipeline's), so a rollback to a version of the current
spec stands until the next scheduled training.
"""

from __future__ import annotations

from openanomaly.domain.records import ModelVersion
from openanomaly.domain.spec import spec_hash
from openanomaly.errors import ConfigError, NotFound
from openanomaly.ports import ModelRegistry, PipelineStore


def rollback(
    pipelines: PipelineStore, registry: ModelRegistry, pipeline_id: str, to: str | None = None
) -> ModelVersion:
    """Activate version ``to``, by default the version recorded before the active one.

    Raises NotFound (no such pipeline or version), or ConfigError when there is no version
    to go back to (none before the active one) or the one named cannot serve the pipeline as
    it is now (trained for another query, step or model: the Inferencer would ignore it)."""
    pipeline = pipelines.get(pipeline_id)
    versions = registry.versions(pipeline_id)
    active = registry.active(pipeline_id)
    if to is None:
        target = _previous(versions, active)
        if target is None:
            now = f"the active one ({active.version})" if active else "no active version"
            raise ConfigError(
                f"pipeline {pipeline_id!r} has no model version before {now}: "
                "nothing to roll back to",
                where="models rollback",
            )
    else:
        target = next((v for v in versions if v.version == to), None)
        if target is None:
            raise NotFound("model version", f"{pipeline_id}/{to}")
    if target.spec_hash != spec_hash(pipeline):
        raise ConfigError(
            f"version {target.version} of pipeline {pipeline_id!r} was trained for another "
            "spec of the pipeline (its query, step or model changed since): it would not be "
            "used; restore that spec first, or train",
            where="models rollback",
        )
    registry.activate(pipeline_id, target.version)
    return target


def _previous(versions: list[ModelVersion], active: ModelVersion | None) -> ModelVersion | None:
    """The version recorded just before the active one (versions are newest first)."""
    if active is None:
        return None
    names = [v.version for v in versions]
    if active.version not in names:
        return None
    older = versions[names.index(active.version) + 1 :]
    return older[0] if older else None
