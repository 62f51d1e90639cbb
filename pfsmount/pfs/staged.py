"""Files being written through the mount: their bytes live in memory, or in a local file.

A ``Dirty`` file is made when a file is created or opened for writing. Writes, reads and
truncates go to an in-memory buffer while the file is small (most are: ``cp -r`` of
source trees, ``tar x``), and to an ``O_TMPFILE`` in the root's staging directory (gone by
itself if the daemon dies) once it grows past ``MEMORY``: opening and closing an
``O_TMPFILE`` costs an ext4 orphan-list update each, a large part of a small file's cost.
When the last handle closes, or on fsync, ``overlay`` stores it. A write
that fails (the disk under the staging directory is full) leaves ``error`` set: the bytes
held are then not what the program wrote, so they are never stored, and every later
operation on the file fails until it is closed. Nothing here talks to FUSE or to the store.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable
from pathlib import Path

import trio


class Dirty:
    MEMORY = 256 * 1024  # bytes kept in memory; past this the file spills to a local file

    def __init__(self, staging: Path, mode: int) -> None:
        self.staging = staging
        self.buf: bytearray | None = bytearray()  # None once spilled to ``fd``
        self.fd: int | None = None
        self.mode = mode
        self.mtime_ns = time.time_ns()
        self.changed = False  # bytes or mode differ from what the store holds
        self.handles = 0
        self.staged = 0  # versions in the staging journal, not yet in LMDB: keep the bytes
        self.saving = trio.Lock()  # one save at a time, so versions are staged in order
        self.error = 0  # errno of a write or save that failed: never stored, see above

    def failed(self, code: int | None) -> int:
        """Remember that a write or save failed (with ``code``, else EIO); the errno."""
        self.error = self.error or code or errno.EIO
        return self.error

    def _spill(self) -> int:
        """Move the bytes to a local file (the file outgrew memory); its descriptor."""
        if self.fd is None:
            self.fd = os.open(self.staging, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            if self.buf:
                os.pwrite(self.fd, self.buf, 0)
            self.buf = None
        return self.fd

    def fill(self, pieces: Iterable[bytes]) -> None:
        """Start from existing content (an open without O_TRUNC)."""
        offset = 0
        for piece in pieces:
            self._put(offset, piece)
            offset += len(piece)

    def size(self) -> int:
        if self.buf is not None:
            return len(self.buf)
        assert self.fd is not None
        return os.fstat(self.fd).st_size

    def read(self, offset: int, size: int) -> bytes:
        if self.buf is not None:
            return bytes(self.buf[offset:offset + size])
        assert self.fd is not None
        return os.pread(self.fd, size, offset)

    def contents(self) -> bytes | None:
        """The whole file, if it is held in memory (else read it from ``fd``)."""
        return bytes(self.buf) if self.buf is not None else None

    def _put(self, offset: int, data: bytes) -> int:
        buf = self.buf
        if buf is not None and offset + len(data) <= self.MEMORY:
            if offset > len(buf):  # a hole reads as zeros
                buf.extend(bytes(offset - len(buf)))
            buf[offset:offset + len(data)] = data
            return len(data)
        return os.pwrite(self._spill(), data, offset)

    def write(self, offset: int, data: bytes) -> int:
        try:
            written = self._put(offset, data)
        except OSError as e:
            self.failed(e.errno)
            raise
        self.changed = True
        self.mtime_ns = time.time_ns()
        return written

    def truncate(self, size: int) -> None:
        buf = self.buf
        if buf is not None and size <= self.MEMORY:
            if size < len(buf):
                del buf[size:]
            else:
                buf.extend(bytes(size - len(buf)))
        else:
            try:
                os.ftruncate(self._spill(), size)
            except OSError as e:
                self.failed(e.errno)
                raise
        self.changed = True
        self.mtime_ns = time.time_ns()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.buf = None
