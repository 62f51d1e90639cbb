"""Immutable named objects (pack files): the seam between pfsmount and its storage backend.

An object is written once, whole, and then only read by byte range, listed or deleted. The
local backend keeps objects as files in one directory; an S3 backend implements the same
``ObjectStore`` protocol. Nothing here knows what is inside an object.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pfsmount.errors import Corrupt

RETIRE_GRACE = 600.0  # seconds a deleted object's descriptor stays reserved


class ObjectStore(Protocol):
    """What the pack layer needs of a backend. Objects never change once put."""

    def put_file(self, name: str, path: Path) -> None:
        """Store the finished local file ``path`` as ``name``; ``path`` may be consumed."""

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes at ``offset`` or raise ``Corrupt``."""

    def size(self, name: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""

    def fileno(self, name: str) -> int | None:
        """A local descriptor to read the object from (valid while the object exists), or
        None for a remote backend. Lets exports copy raw bytes inside the kernel."""

    def list(self) -> Iterator[str]: ...

    def delete(self, name: str) -> None: ...


class LocalObjectStore:
    """Objects as files in one directory; reads use cached descriptors and ``pread``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._fds: dict[str, int] = {}
        self._retired: list[tuple[float, int]] = []  # (when, descriptor) of deleted objects
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.directory / name

    def put_file(self, name: str, path: Path) -> None:
        target = self._path(name)
        try:
            os.replace(path, target)
        except OSError:
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
            path.unlink()
        dirfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            with self._lock:
                fd = self._fds.get(name)
                if fd is None:
                    try:
                        fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        raise Corrupt(f"pack object {name} is missing") from None
                    self._fds[name] = fd
        return fd

    def fileno(self, name: str) -> int | None:
        return self._fd(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = os.pread(self._fd(name), length, offset)
        if len(data) != length:
            raise Corrupt(f"pack object {name} is shorter than {offset + length} bytes")
        return data

    def size(self, name: str) -> int | None:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            return None

    def list(self) -> Iterator[str]:
        for entry in os.scandir(self.directory):
            if entry.is_file() and not entry.name.endswith(".tmp"):
                yield entry.name

    def delete(self, name: str) -> None:
        """Remove an object. A descriptor a reader may still hold (``fileno``) is pointed at
        an empty file instead of closed: the space comes back now, a late read fails as a
        short read rather than reading whatever file reuses the number, and the number is
        closed for good after ``RETIRE_GRACE`` seconds."""
        with self._lock:
            fd = self._fds.pop(name, None)
            if fd is not None:
                empty = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                os.dup2(empty, fd)
                os.close(empty)
                self._retired.append((time.monotonic(), fd))
            self._reap_locked(time.monotonic() - RETIRE_GRACE)
        self._path(name).unlink(missing_ok=True)

    def _reap_locked(self, before: float) -> None:
        while self._retired and self._retired[0][0] <= before:
            os.close(self._retired.pop(0)[1])

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._reap_locked(float("inf"))
