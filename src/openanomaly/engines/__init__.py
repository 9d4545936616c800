"""Model engines and the factory that builds them from a pipeline's ``model`` spec.

Each engine lives in its own module, imported only when a pipeline uses it, so that optional
libraries (statsforecast, ...) are never imported by ``import openanomaly.engines``. An engine
module provides its default model name and two functions:

    DEFAULT_MODEL: str
    create(name: str, params: Mapping[str, Any], *, step: int) -> ModelEngine
    loads(data: bytes, *, step: int) -> ModelEngine

(the remote engine also takes ``token``, the auto engine ``factory``: see ``DefaultEngineFactory``).
Engines share ``base.py``; the factory wraps them in ``floor.ProfileFloor``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast

from pydantic import SecretStr

from openanomaly.domain.spec import ModelSpec
from openanomaly.engines.base import require
from openanomaly.engines.floor import ProfileFloor
from openanomaly.errors import EngineError, EngineNotInstalled, UnknownModel
from openanomaly.ports import ModelEngine

log = logging.getLogger(__name__)

ENGINES: dict[str, str] = {
    "builtin": "openanomaly.engines.builtin",
    "statsforecast": "openanomaly.engines.statsforecast",
    "mlforecast": "openanomaly.engines.mlforecast",
    "pyod": "openanomaly.engines.pyod",
    "remote": "openanomaly.engines.remote",
    "auto": "openanomaly.engines.auto",
    "chronos": "openanomaly.engines.chronos",
    "neuralforecast": "openanomaly.engines.neuralforecast",
    "darts": "openanomaly.engines.darts",
    # Later engines register here, each in its own module with create() and loads():
}
"""Engine name (``model.engine`` in a pipeline) -> module implementing it."""


class EngineModule(Protocol):
    """What the factory needs from an engine module."""

    DEFAULT_MODEL: str

    def create(
        self, name: str, params: Mapping[str, Any], *, step: int, **options: Any
    ) -> ModelEngine: ...

    def loads(self, data: bytes, *, step: int, **options: Any) -> ModelEngine: ...


def preload(engines: Iterable[str]) -> list[str]:
    """Import ``engines``' modules and the libraries they declare (``LIBRARY``) now, in this
    process: ``openanomaly worker`` does it before its pool forks, so that no pool process
    (a new one, or one replaced after a crash or a hard time limit) pays seconds of imports in
    its first job and inside that job's time limit. An unknown engine, or one whose extra is
    not installed, is skipped with a log line (its pipelines fail as they would anyway).
    Returns the engines imported."""
    done = []
    for engine in engines:
        try:
            require(engine, *getattr(engine_module(engine), "LIBRARY", ()))
        except (UnknownModel, EngineNotInstalled) as exc:
            log.info("engine %s not preloaded: %s", engine, exc)
            continue
        done.append(engine)
    return done


def engine_module(engine: str) -> EngineModule:
    """The module of ``engine``, imported now; UnknownModel lists the known engines."""
    path = ENGINES.get(engine)
    if path is None:
        raise UnknownModel("engine", engine, list(ENGINES))
    return cast(EngineModule, importlib.import_module(path))


UNFLOORED = frozenset({"builtin", "auto", "remote"})
"""Engines ``band_floor`` does not apply to: the profile itself, and the engines whose models are
built by a factory of their own, each with its own ``band_floor`` (auto's candidates, the model
a remote server hosts)."""


class DefaultEngineFactory:
    """Builds engines by name from ``ENGINES``, each wrapped in ``ProfileFloor`` when its spec's
    ``band_floor`` is ``profile``; the cold-start model is the unfitted profile.

    Args:
        remote_token: the bearer token of the remote engine's model server (from Settings).
    """

    def __init__(self, *, remote_token: SecretStr | None = None) -> None:
        self.remote_token = remote_token

    def _options(self, engine: str) -> dict[str, Any]:
        """What the composition root hands an engine beyond its spec."""
        if engine == "remote":
            return {"token": self.remote_token}
        if engine == "auto":
            return {"factory": self}  # candidates built with the same settings
        return {}

    def create(self, spec: ModelSpec, *, step: int) -> ModelEngine:
        """A new, unfitted engine for ``spec``."""
        module = engine_module(spec.engine)
        name = spec.name or module.DEFAULT_MODEL
        engine = module.create(name, spec.params, step=step, **self._options(spec.engine))
        return ProfileFloor(engine, step=step) if _floored(spec) else engine

    def load(self, spec: ModelSpec, data: bytes, *, step: int) -> ModelEngine:
        """The engine saved as ``data`` (by ``dumps``) for a pipeline whose model is ``spec``."""
        module, options = engine_module(spec.engine), self._options(spec.engine)

        def inner(blob: bytes) -> ModelEngine:
            return module.loads(blob, step=step, **options)

        return ProfileFloor.load(data, step=step, inner=inner) if _floored(spec) else inner(data)

    def validate(self, spec: ModelSpec, *, step: int) -> None:
        """Create ``spec``'s engine unfitted, which runs its name and parameter checks; a
        constructor's own TypeError/ValueError is reported as the EngineError it means."""
        try:
            self.create(spec, step=step)
        except (TypeError, ValueError) as exc:
            raise EngineError(str(exc)) from None

    def resolve(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with its engine's ``DEFAULT_MODEL`` as ``name`` when it has none."""
        if spec.name is not None or spec.engine not in ENGINES:
            return spec
        return spec.model_copy(update={"name": engine_module(spec.engine).DEFAULT_MODEL})

    def cold_start(self, *, step: int) -> ModelEngine:
        """The built-in profile without a fitted state: median and MAD of each context."""
        from openanomaly.engines.builtin import ProfileModel

        return ProfileModel(step=step, season=None)


def _floored(spec: ModelSpec) -> bool:
    return spec.band_floor == "profile" and spec.engine not in UNFLOORED


__all__ = [
    "ENGINES",
    "UNFLOORED",
    "DefaultEngineFactory",
    "EngineModule",
    "engine_module",
    "preload",
]
