"""Reading many small local files: open, read, chunk, name and compress them in batches.

Ingesting a tree of small files is per-file work (a few system calls, a hash, a compression
trial) that holds the GIL most of the time, and cold reads that wait on the disk one at a
time. ``read_batch`` does all of it for a list of paths and returns what the pack store
needs; ``Readers`` runs it in a few worker processes, so files are read in parallel and the
Python work uses every core. Workers only read: the parent appends the bytes to packs and
indexes them, so crash safety stays where it is (``packs``). Files too large to travel
through a pipe come back as ``Large`` for the parent to store itself. Nothing here touches
metadata or packs.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import select
import stat
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

import blake3

from pfsmount.store import chunking
from pfsmount.store.packs import Stored
from pfsmount.store.rows import TABLE_ROW

FILE_LIMIT = 1 << 20  # larger files are stored by the parent (pipelined, see ``content``)
BATCH_BYTES = 32 << 20  # past this much data a batch hands its remaining files back
POOL_MIN = 1024  # fewer files than this are read in the calling thread
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Prepared(NamedTuple):
    """A file read, chunked and named: its content name, size, mode, table and new chunks."""

    digest: bytes
    size: int
    mode: int
    table: bytes
    chunks: list[Stored]


class Large(NamedTuple):
    """A file for the parent to store itself (too big for a batch)."""


class Skipped(NamedTuple):
    """Not a regular file any more (replaced since it was listed): left out."""


class Failed(NamedTuple):
    message: str


Result = Prepared | Large | Skipped | Failed


def read_batch(paths: list[str]) -> list[Result]:
    """Read, chunk, name and compress each file; one result per path, in order."""
    out: list[Result] = []
    total = 0
    for path in paths:
        if total >= BATCH_BYTES:
            out.append(Large())
            continue
        try:
            fd = os.open(path, _OPEN)
        except OSError as e:
            out.append(Skipped() if e.errno == errno.ELOOP else Failed(f"cannot read {path}: "
                                                              f"{e.strerror}"))
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                out.append(Skipped())
                continue
            if st.st_size > FILE_LIMIT:
                out.append(Large())
                continue
            data = os.read(fd, st.st_size)  # the size it had when opened, as split_fd
            while len(data) < st.st_size:  # short read: go on until EOF
                more = os.read(fd, st.st_size - len(data))
                if not more:
                    break
                data += more
        except OSError as e:
            out.append(Failed(f"cannot read {path}: {e.strerror}"))
            continue
        finally:
            os.close(fd)
        total += len(data)
        out.append(prepare(data, st.st_mode))
    return out


def prepare(data: bytes, mode: int) -> Prepared:
    chunks: list[Stored] = []
    table = bytearray()
    end = 0
    for view in chunking.split_buffer(data):
        name = chunking.digest(view)
        codec, stored = chunking.compress(view)
        chunks.append(Stored(name, len(view), codec, bytes(stored)))
        end += len(view)
        table += TABLE_ROW.pack(name, end)
    # One chunk names the file; none or several: the whole file's BLAKE3 (see ``content``).
    digest = chunks[0].digest if len(chunks) == 1 else blake3.blake3(data).digest()
    return Prepared(digest, len(data), 0o755 if mode & 0o111 else 0o644, bytes(table), chunks)


class Readers:
    """A lazily started pool of reader processes, kept for the life of the store.

    Workers are forked from a fork server, never from the daemon itself (which is
    multi-threaded and holds LMDB handles). The server starts once with this module and the
    main module imported, so a worker costs a fork, not a Python start-up and its imports
    (about 0.3 s of CPU each).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or 2 * (os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the store's readers are closed")
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["__main__", __name__])
                self._pool = ProcessPoolExecutor(self.workers, mp_context=context,
                                                 initializer=_exit_with, initargs=(os.getpid(),))
            return self._pool

    def start(self) -> None:
        """Start every worker now (a daemon does, so that its first big put does not wait
        for processes to spawn)."""
        try:
            pool = self._executor()
            for future in [pool.submit(read_batch, []) for _ in range(self.workers)]:
                future.result()
        except (RuntimeError, BrokenProcessPool, CancelledError):
            if not self._closed:  # else the store closed meanwhile (a daemon stopping at once)
                raise

    def map(self, batches: Iterable[list[str]], parallel: bool) -> Iterator[list[Result]]:
        """``read_batch`` over each batch, results in order; a few batches run ahead.

        If a worker dies (killed, out of memory), the pool is dropped (the next call starts
        a new one) and the batches it did not finish are read in the calling thread.
        """
        if not parallel:
            yield from map(read_batch, batches)
            return
        pool: ProcessPoolExecutor | None = self._executor()
        window: deque[tuple[list[str], Future[list[Result]] | None]] = deque()
        try:
            for paths in batches:
                future = None
                if pool is not None:
                    try:
                        future = pool.submit(read_batch, paths)
                    except BrokenProcessPool:
                        self._drop()
                        pool = None
                window.append((paths, future))
                if len(window) > self.workers + 2:
                    yield self._collect(*window.popleft())
            while window:
                yield self._collect(*window.popleft())
        finally:
            for _, future in window:
                if future is not None:
                    future.cancel()

    def _collect(self, paths: list[str], future: Future[list[Result]] | None) -> list[Result]:
        if future is not None:
            try:
                return future.result()
            except BrokenProcessPool:
                self._drop()
        return read_batch(paths)

    def _drop(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None


def _exit_with(owner: int) -> None:
    """Make a worker exit as soon as the process that owns the pool is gone.

    A pool's workers are children of the fork server, not of the daemon: after a SIGKILL of
    the daemon nothing would ever tell them to stop.
    """
    try:
        pidfd = os.pidfd_open(owner)
    except ProcessLookupError:  # gone already
        os._exit(0)
    except OSError:  # no pidfds (Linux before 5.3): the worker runs unwatched
        return

    def watch() -> None:
        select.select([pidfd], [], [])  # readable once the owner has exited
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-owner", daemon=True).start()
