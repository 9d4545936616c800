"""The JSON shapes of the remote-engine protocol (``docs/remote-protocol.md``), shared by the
client engine (``engines/remote.py``) and the model server (``modelserver.py``).

Arrays go out through orjson's numpy support, which writes NaN and infinities as ``null``;
they come back through ``np.array(..., dtype=float64)``, which reads ``null`` as NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.domain.spec import ModelSpec
from openanomaly.errors import EngineError

PROTOCOL = 1
"""The protocol version, served by ``GET /v1/health``; paths are prefixed ``/v1``."""


class ProtocolError(EngineError):
    """A request or response that does not follow the protocol; names the offending field."""


def dumps(body: dict[str, Any]) -> bytes:
    """``body`` as JSON; numpy arrays are written as lists, non-finite floats as ``null``."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def loads(content: bytes, what: str) -> dict[str, Any]:
    """A JSON object, or ProtocolError naming ``what`` was not one."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``body[name]``, checked to be of ``kind`` (ProtocolError names the field otherwise)."""
    value = body.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProtocolError(f"{name}: expected {names}, got {type(value).__name__}")
    return value


def model_to_json(spec: ModelSpec) -> dict[str, Any]:
    return spec.model_dump()


def model_from_json(value: Any) -> ModelSpec:
    """A ``model`` object: ``{engine, name, params}``, validated like a pipeline's model."""
    try:
        return ModelSpec.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("model", *first["loc"]))
        raise ProtocolError(f"{where}: {first['msg']}") from None


def panel_to_json(batch: SeriesBatch) -> dict[str, Any]:
    """``{timestamps, series: [{labels, values}]}``: one row of values per series."""
    return {
        "timestamps": batch.timestamps,
        "series": [
            {"labels": dict(lb), "values": np.ascontiguousarray(row)}
            for lb, row in zip(batch.labels, batch.values, strict=True)
        ],
    }


def panel_from_json(value: Any, name: str) -> SeriesBatch:
    """The panel in field ``name``; ProtocolError says what is wrong with it."""
    if not isinstance(value, dict):
        raise ProtocolError(f"{name}: expected an object with timestamps and series")
    timestamps = timestamps_from_json(value.get("timestamps"), f"{name}.timestamps")
    series = value.get("series")
    if not isinstance(series, list):
        raise ProtocolError(f"{name}.series: expected a list")
    labels: list[dict[str, str]] = []
    for i, item in enumerate(series):
        lb = item.get("labels") if isinstance(item, dict) else None
        if not isinstance(lb, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in lb.items()
        ):
            raise ProtocolError(f"{name}.series[{i}].labels: expected an object of strings")
        labels.append(lb)
    rows = [item.get("values") for item in series]
    values = matrix(rows, f"{name}.series[].values", (len(series), timestamps.size))
    try:
        return SeriesBatch(tuple(labels), timestamps, values)
    except ValueError as exc:
        raise ProtocolError(f"{name}: {exc}") from None


def forecast_to_json(fc: Forecast) -> dict[str, Any]:
    """``{yhat, lower, upper}``, each a list of rows (series) of columns (timestamps)."""
    return {k: np.ascontiguousarray(getattr(fc, k)) for k in ("yhat", "lower", "upper")}


def forecast_from_json(body: dict[str, Any], shape: tuple[int, int]) -> Forecast:
    """The forecast of a predict response, checked to have ``shape``."""
    return Forecast(*(matrix(body.get(k), k, shape) for k in ("yhat", "lower", "upper")))


def matrix(value: Any, name: str, shape: tuple[int, int]) -> FloatArray:
    """A ``shape`` float matrix from nested lists (``null`` is NaN)."""
    if not isinstance(value, list):
        raise ProtocolError(f"{name}: expected a list of rows")
    try:
        arr = np.array(value, dtype=np.float64) if value else np.empty((0, shape[1]))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{name}: not rows of numbers of equal length ({exc})") from None
    if arr.shape != shape:
        raise ProtocolError(f"{name}: expected shape {list(shape)}, got {list(arr.shape)}")
    return arr


def timestamps_from_json(value: Any, name: str) -> IntArray:
    """A list of unix seconds."""
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ProtocolError(f"{name}: expected a list of integers (unix seconds)")
    return np.array(value, dtype=np.int64)
