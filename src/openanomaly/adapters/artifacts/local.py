"""Model artifacts as files under one directory (the standalone ArtifactStore)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from openanomaly.errors import NotFound

_NEW_FILE_MODE = 0o644


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one.

    The bytes go to a temporary file in the same directory (``os.replace`` is only atomic
    within one file system), are fsynced, then renamed over ``path``; the directory is fsynced
    too so that the rename survives a power cut. An existing file keeps its permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_of(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _mode_of(path: Path) -> int:
    # mkstemp creates files 0600; keep what an operator chose for an existing file instead.
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return _NEW_FILE_MODE


def _fsync_dir(directory: Path) -> None:
    # Not every platform can open a directory (Windows): durability there is best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalArtifactStore:
    """ArtifactStore over a local directory: key ``pipelines/<id>/<version>.bin`` is the file
    ``<root>/pipelines/<id>/<version>.bin``.

    Saves are atomic (see :func:`write_atomic`). Keys are relative ``/``-separated paths; a key
    that could leave ``root`` (absolute, ``..``, ``.``, empty segments, backslashes) raises
    ``ValueError``, as does one that leads out through a symbolic link.

    Args:
        root: The directory holding the artifacts; created on the first save.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def save(self, key: str, data: bytes) -> None:
        write_atomic(self._path(key), data)

    def load(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound("artifact", key) from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
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
