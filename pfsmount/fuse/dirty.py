"""Files being written through the mount: their bytes live in an anonymous local file.

A ``Dirty`` file is made when a file is created or opened for writing. Writes, reads and
truncates go to an ``O_TMPFILE`` in the root's staging directory (gone by itself if the
daemon dies); when the last handle closes, or on fsync, the mount ingests it into the store.
Nothing here talks to FUSE or to the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path


class Dirty:
    def __init__(self, staging: Path, mode: int) -> None:
        self.fd = os.open(staging, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        self.mode = mode
        self.mtime_ns = time.time_ns()
        self.changed = False  # bytes or mode differ from what the store holds
        self.handles = 0
        self.staged = 0  # versions in the staging journal, not yet in LMDB: keep the bytes

    def fill(self, pieces: Iterable[bytes]) -> None:
        """Start from existing content (an open without O_TRUNC)."""
        offset = 0
        for piece in pieces:
            os.pwrite(self.fd, piece, offset)
            offset += len(piece)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def write(self, offset: int, data: bytes) -> int:
        written = os.pwrite(self.fd, data, offset)
        self.changed = True
        self.mtime_ns = time.time_ns()
        return written

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.changed = True
        self.mtime_ns = time.time_ns()

    def close(self) -> None:
        os.close(self.fd)
