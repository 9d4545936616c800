"""Model engines and the factory that builds them from a pipeline's ``model`` spec.

Each engine lives in its own module, imported only when a pipeline uses it, so that optional
libraries (statsforecast, ...) are never imported by ``import openanomaly.engines``. An engine
module provides its default model name and two functions:

    DEFAULT_MODEL: str
    create(name: str, params: Mapping[str, Any], *, step: int) -> ModelEngine
    loads(data: bytes, *, step: int) -> ModelEngine
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, cast

from openanomaly.domain.spec import ModelSpec
from openanomaly.errors import EngineError, UnknownModel
from openanomaly.ports import ModelEngine

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

    def create(self, name: str, params: Mapping[str, Any], *, step: int) -> ModelEngine: ...

    def loads(self, data: bytes, *, step: int) -> ModelEngine: ...


def engine_module(engine: str) -> EngineModule:
    """The module of ``engine``, imported now; UnknownModel lists the known engines."""
    path = ENGINES.get(engine)
    if path is None:
        raise UnknownModel("engine", engine, list(ENGINES))
    return cast(EngineModule, importlib.import_module(path))


class DefaultEngineFactory:
    """Builds engines by name from ``ENGINES``; the cold-start model is the unfitted profile."""

    def create(self, spec: ModelSpec, *, step: int) -> ModelEngine:
        """A new, unfitted engine for ``spec``."""
        module = engine_module(spec.engine)
        return module.create(spec.name or module.DEFAULT_MODEL, spec.params, step=step)

    def load(self, spec: ModelSpec, data: bytes, *, step: int) -> ModelEngine:
        """The engine saved as ``data`` (by ``dumps``) for a pipeline whose model is ``spec``."""
        return engine_module(spec.engine).loads(data, step=step)

    def validate(self, spec: ModelSpec, *, step: int) -> None:
        """Create ``spec``'s engine unfitted, which runs its name and parameter checks; a
        constructor's own TypeError/ValueError is reported as the EngineError it means."""
        try:
            self.create(spec, step=step)
        except (TypeError, ValueError) as exc:
            raise EngineError(str(exc)) from None

    def cold_start(self, *, step: int) -> ModelEngine:
        """The built-in profile without a fitted state: median and MAD of each context."""
        from openanomaly.engines.builtin import ProfileModel

        return ProfileModel(step=step, season=None)


__all__ = ["ENGINES", "DefaultEngineFactory", "EngineModule", "engine_module"]
