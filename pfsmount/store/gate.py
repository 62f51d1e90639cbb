"""The write gate between writers and garbage collection.

A write that stores chunks may also *reuse* chunks already indexed (deduplication), and a
reused chunk can be garbage a moment before the write's transaction references it. So every
``ChunkBatch`` enters the gate before it looks up or appends a chunk, and leaves once its
transaction is done (or once it is dropped: a failed write just goes away). Garbage
collection closes the gate: new batches wait, and the collector waits for those already in
to leave. Nothing here knows what a chunk or a collection is.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pfsmount.errors import Conflict


class WriteGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside: weakref.WeakSet[Any] = weakref.WeakSet()  # a dropped batch leaves
        self._closed = False

    def enter(self, batch: Any) -> None:
        """Let ``batch`` write; waits while a collection runs. Cheap once it is in."""
        if batch in self._inside:
            return
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._inside.add(batch)

    def try_enter(self, batch: Any) -> bool:
        """``enter`` if that needs no waiting; False while a collection holds the gate."""
        with self._cond:
            if self._closed and batch not in self._inside:
                return False
            self._inside.add(batch)
            return True

    def leave(self, batch: Any) -> None:
        with self._cond:
            self._inside.discard(batch)
            self._cond.notify_all()

    @contextmanager
    def closed(self, timeout: float) -> Iterator[None]:
        """Hold new batches back and wait for those inside to leave (``Conflict`` when they
        do not within ``timeout`` seconds, or when another collection holds the gate)."""
        with self._cond:
            if self._closed:
                raise Conflict("a garbage collection is already running")
            self._closed = True
        try:
            deadline = time.monotonic() + timeout
            with self._cond:
                while self._inside:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Conflict(
                            f"{len(self._inside)} write(s) still in progress after "
                            f"{timeout:g} s; run gc again when they are done")
                    # A dropped batch leaves without a notify: look again now and then.
                    self._cond.wait(min(left, 0.05))
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()
