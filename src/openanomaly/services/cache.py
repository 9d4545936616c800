"""The per-worker cache of loaded models."""

from __future__ import annotations

import threading
from collections import OrderedDict

from openanomaly.ports import ModelEngine


class ModelCache:
    """Fitted models per (pipeline, version), kept per worker process: loading an artifact is
    the expensive part of a cheap inference."""

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[tuple[str, str], ModelEngine] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> ModelEngine | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, str], model: ModelEngine) -> None:
        with self._lock:
            self._items[key] = model
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
