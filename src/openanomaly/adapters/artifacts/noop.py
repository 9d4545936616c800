"""An ArtifactStore for models without learned state (zero-shot and stat-only models)."""

from __future__ import annotations

from openanomaly.errors import NotFound


class NoOpArtifactStore:
    """Keeps nothing: ``save`` discards the bytes, ``load`` always raises NotFound.

    For deployments whose models need no artifact, so that no directory or bucket has to be
    configured; a model version of such an engine records ``artifact=None`` anyway.
    """

    def save(self, key: str, data: bytes) -> None:
        return None

    def load(self, key: str) -> bytes:
        raise NotFound("artifact", key)

    def delete(self, key: str) -> None:
        return None
