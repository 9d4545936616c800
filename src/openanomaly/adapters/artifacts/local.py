"""Model artifacts as files under one directory (the standalone ArtifactStore)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from openanomaly.adapters.files import write_atomic
from openanomaly.errors import NotFound, StoreError

_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


@contextlib.contextmanager
def _translated(key: str, *, loading: bool = False) -> Iterator[None]:
    """Where file-system errors become ours: loading a file that is not there is NotFound; any
    other failure (permissions, a full disk, a name too long, a file where a directory should
    be) is a StoreError."""
    try:
        yield
    except OSError as exc:
        if loading and isinstance(exc, _MISSING):
            raise NotFound("artifact", key) from None
        raise StoreError(f"artifact {key!r}: {exc.strerror or exc}", store="artifacts") from exc


class LocalArtifactStore:
    """ArtifactStore over a local directory: key ``pipelines/<id>/<version>.bin`` is the file
    ``<root>/pipelines/<id>/<version>.bin``.

    Saves are atomic (see :func:`~openanomaly.adapters.files.write_atomic`). A missing
    artifact raises NotFound, any other file-system failure StoreError.
    Keys are relative ``/``-separated paths; a key that could leave ``root`` (absolute, ``..``,
    ``.``, empty segments, backslashes) raises ``ValueError``, as does one that leads out
    through a symbolic link.

    Args:
        root: The directory holding the artifacts; created on the first save.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def save(self, key: str, data: bytes) -> None:
        with _translated(key):
            write_atomic(self._path(key), data)

    def load(self, key: str) -> bytes:
        with _translated(key, loading=True):
            return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        with _translated(key), contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def _path(self, key: str) -> Path:
        segments = key.split("/")
        if (
            not key
            or "\\" in key
            or "\0" in key
            or any(s in ("", ".", "..") for s in segments)
            or Path(key).is_absolute()
        ):
            raise ValueError(f"artifact key must be a relative path like 'a/b.bin': {key!r}")
        path = self.root.joinpath(*segments)
        # A symlink planted under root could still point elsewhere: check the real location.
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"artifact key leads outside the store: {key!r}")
        return path
