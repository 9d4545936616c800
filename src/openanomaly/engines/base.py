"""What every engine shares, so that a model file holds only its own math (as statsforecast's
``_TS`` does for its models): parameter checks that state the valid range, the "fitted?" check,
the key -> fitted row index, the lazy import that names the extra to install, the translation
of library errors, and a versioned artifact envelope.

The artifact is a tar holding ``header.json`` (engine, format version, step, and what the engine
adds) and the engine's own members. A loader refuses another engine's artifact, another format
version (an older layout is refused with "retrain"), and one trained at another step (the season
slots and horizons would shift). The envelope is read before anything inside it is, so a pickle
member is never unpickled from a stale or foreign artifact.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import pickle
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import IntArray
from openanomaly.errors import EngineError, EngineNotInstalled, OpenAnomalyError

BoolArray = npt.NDArray[np.bool_]
HEADER = "header.json"


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` if it is an integer in ``[low, high]``; else EngineError stating the range."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
        where = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise EngineError(f"{name} must be an integer {where}, got {value!r}")
    return value  # type: ignore[return-value]


def check_number(
    name: str,
    value: object,
    low: float,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = True,
) -> float:
    """``value`` as a float if it is a number in the range; else EngineError stating it
    (``(0, 1]`` is ``low=0, high=1, open_low=True, open_high=False``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    x = float(value) if ok else math.nan  # type: ignore[arg-type]
    above = x > low if open_low else x >= low
    below = x < high if open_high else x <= high
    if not (above and below):
        if high == math.inf:
            where = f"> {low:g}" if open_low else f">= {low:g}"
        else:
            where = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise EngineError(f"{name} must be a number {where}, got {value!r}")
    return x


def check_floor(value: object) -> float:
    """A ``spread_floor``: the smallest half-width relative to the series' level, in [0, 1)."""
    return check_number("spread_floor", value, 0.0, 1.0)


def require(engine: str, *modules: str, extra: str | None = None) -> list[ModuleType]:
    """``modules`` imported now; EngineNotInstalled names the extra to install if one is
    missing (``extra`` defaults to the engine's name)."""
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError:
        raise EngineNotInstalled(engine, extra or engine) from None


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Any library exception raised inside becomes an EngineError saying ``what`` failed (ours
    pass through). The one mapping where an engine meets its library's errors: nothing above
    an engine sees a statsforecast, lightgbm or torch exception."""
    try:
        yield
    except OpenAnomalyError:
        raise
    except Exception as exc:
        why = " ".join(str(exc).split())[:500] or type(exc).__name__
        raise EngineError(f"{what}: {type(exc).__name__}: {why}") from exc


class KeyIndex:
    """The key -> row lookup of a model fitted over a panel: ``keys_`` (the series it saw, in
    row order) and ``known_`` (which of them it could learn from), set by ``fit``."""

    keys_: tuple[str, ...]
    known_: BoolArray
    _index: dict[str, int] | None = None

    def _rows(self, keys: Sequence[str]) -> IntArray:
        """Each key's fitted row, or -1 (unseen, or seen without enough data)."""
        if not self.__dict__.get("keys_"):
            return np.full(len(keys), -1, dtype=np.int64)
        if tuple(keys) == self.keys_:  # the usual case: the same query as at fit
            rows = np.arange(len(keys), dtype=np.int64)
        else:
            if self.__dict__.get("_index") is None:
                self._index = {k: i for i, k in enumerate(self.keys_)}
            index = self._index or {}
            rows = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        return np.where((rows >= 0) & self.known_[np.maximum(rows, 0)], rows, -1)

    def _set_keys(self, keys: Sequence[str], known: BoolArray) -> None:
        self.keys_, self.known_, self._index = tuple(keys), np.asarray(known, dtype=bool), None

    def known(self, keys: Sequence[str]) -> BoolArray:
        """Which series have a fitted model (the others get the cold-start model)."""
        return np.asarray(self._rows(keys) >= 0, dtype=bool)


def check_unique(keys: Sequence[str]) -> None:
    """A panel must not hold a series twice (its rows would be ambiguous)."""
    if len(set(keys)) != len(keys):
        raise EngineError("history has duplicate series keys")


class Engine:
    """The base of the engines: ``ENGINE`` (its name in ``ENGINES``) and ``FORMAT`` (the
    version of its artifact layout, bumped whenever the layout changes)."""

    ENGINE: ClassVar[str]
    FORMAT: ClassVar[int]
    requires_fit: bool = True
    step: int

    @property
    def label(self) -> str:
        """How messages name this engine."""
        name = getattr(self, "name", None)
        return f"{self.ENGINE} {name}" if name else self.ENGINE

    @property
    def floor_season(self) -> str | int | None:
        """The season of the profile that floors this engine's band (``ProfileFloor``)."""
        return "auto"

    def check_fitted(self, attribute: str, doing: str = "predict") -> None:
        """EngineError unless ``fit`` has set ``attribute``."""
        if attribute not in self.__dict__:
            raise EngineError(f"{self.label}: {doing}() before fit()")

    def pack(self, members: Mapping[str, bytes], **header: Any) -> bytes:
        """The artifact envelope of the module doc around ``members``."""
        head = {"engine": self.ENGINE, "format": self.FORMAT, "step": self.step, **header}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in {HEADER: json.dumps(head).encode(), **members}.items():
                info = tarfile.TarInfo(name)  # mtime 0, no owner: nothing of the machine
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    @classmethod
    def unpack(cls, data: bytes, *, step: int) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The header and members of an artifact made by ``pack``, checked as the module doc
        says."""
        article = "an" if cls.ENGINE[0] in "aeiou" else "a"
        what = f"not {article} {cls.ENGINE} model artifact of format {cls.FORMAT}"
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                members = {
                    m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers()
                    if m.isfile()
                }
            head = json.loads(members.pop(HEADER))
            engine, found = head.pop("engine"), head.pop("format")
        except Exception as exc:  # tarfile and json raise many kinds on garbage
            why = type(exc).__name__
            raise EngineError(f"{what} ({why}; an older layout? retrain the model)") from None
        if engine != cls.ENGINE:
            raise EngineError(f"{what}: it holds a {engine} model")
        if found != cls.FORMAT:
            raise EngineError(
                f"{cls.ENGINE} artifact format {found}, not {cls.FORMAT}: retrain the model"
            )
        if (trained := head.pop("step")) != step:
            raise EngineError(f"model was trained at step {trained}s, not {step}s: retrain it")
        return head, members


class PickledEngine(Engine):
    """An engine whose fitted state only its library can rebuild (boosters, detectors,
    statsforecast models): pickled inside the envelope. Load such artifacts only from a
    trusted ArtifactStore."""

    def dumps(self) -> bytes:
        """The fitted engine: a pickle inside the versioned envelope."""
        return self.pack({"engine.pkl": pickle.dumps(self, protocol=5)})

    @classmethod
    def loads(cls, data: bytes, *, step: int) -> Self:
        """An engine saved by ``dumps``; refuses another engine, format or step."""
        _, members = cls.unpack(data, step=step)
        try:
            engine = pickle.loads(members["engine.pkl"])
        except Exception as exc:
            raise EngineError(f"{cls.ENGINE} artifact: its pickle does not load: {exc}") from None
        if not isinstance(engine, cls):
            raise EngineError(f"{cls.ENGINE} artifact holds a {type(engine).__name__}")
        return engine


def unknown_params(what: str, params: Mapping[str, Any], accepted: Sequence[str]) -> None:
    """EngineError naming the parameters of ``params`` not in ``accepted``, and those."""
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise EngineError(
            f"{what} has no parameter {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )


__all__ = [
    "Engine",
    "KeyIndex",
    "PickledEngine",
    "check_floor",
    "check_int",
    "check_number",
    "check_unique",
    "require",
    "translated",
    "unknown_params",
]
