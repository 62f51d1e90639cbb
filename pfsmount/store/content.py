"""File contents: a file's bytes as an ordered list of chunks, named by BLAKE3 of the whole.

Writing turns a source (bytes, a local file, a stream) into chunks in packs plus one
``contents`` row; reading maps a byte range back onto chunks (a damaged row is ``Corrupt``,
never a read that loops), checks each chunk's size against the row (``PackStore`` checks its
bytes against its name), and reads long ranges ahead on worker threads. Identical files share
one row and identical chunks are stored once, across files, commits and repos. Nothing here
knows about paths, trees or commits.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple, cast

import blake3
import lmdb

from pfsmount.errors import Corrupt
from pfsmount.store import chunking
from pfsmount.store.meta import Meta
from pfsmount.store.packs import RUN_BYTES, ChunkBatch, PackStore, Stored, runs
from pfsmount.store.readers import Prepared
from pfsmount.store.rows import (
    EMPTY_DIGEST,
    TABLE_ROW,
    ChunkTable,
    Location,
    parse_table,
    table_digests,
)

_GROUP = 4 << 20  # bytes of chunks per task in a pipelined write
_WINDOW = 4  # tasks in flight beyond the one being filled
_AHEAD = 4  # runs of chunks (up to ``packs.RUN_BYTES`` each) read ahead of a reader
_LOOKUP = 256  # chunk locations looked up per read transaction
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> ThreadPoolExecutor:
    """Threads that name and compress chunks, shared by every write in the process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="pfsmount-chunk")
        return _pool


class Content(NamedTuple):
    digest: bytes
    size: int


class WriteBatch:
    """What one write operation stored: chunk locations and contents rows, not yet indexed."""

    def __init__(self) -> None:
        self.chunks = ChunkBatch()
        self.contents: dict[bytes, bytes] = {}
        # Told the bytes of a large file stored so far, every few MiB (a progress bar).
        self.progress: Callable[[int], None] | None = None


class ContentStore:
    def __init__(self, meta: Meta, packs: PackStore) -> None:
        self.meta = meta
        self.packs = packs
        self._tables: OrderedDict[bytes, ChunkTable] = OrderedDict()
        self._lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------

    def write_chunks(self, batch: WriteBatch, chunks: Iterable[bytes | memoryview]) -> Content:
        """Store a file given as its chunks, in order.

        Files up to one group of chunks (``_GROUP``) are stored in this thread: threads
        would cost more than they save. Longer files go through a pipeline: this thread
        cuts chunks (reading the source) while a few threads name, look up, compress and
        append them and one more hashes the whole file, in code that releases the GIL, so
        reading, hashing, compressing and writing overlap.
        """
        it = iter(chunks)
        head: list[bytes | memoryview] = []
        size = 0
        for chunk in it:
            head.append(chunk)
            size += len(chunk)
            if size >= _GROUP:
                return self._write_pipelined(batch, itertools.chain(head, it))
        if not head:
            batch.contents[EMPTY_DIGEST] = b""
            return Content(EMPTY_DIGEST, 0)
        table = bytearray()
        end = 0
        for chunk in head:
            name = chunking.digest(chunk)
            self.packs.add(batch.chunks, name, chunk)
            end += len(chunk)
            table += TABLE_ROW.pack(name, end)
        # One chunk: the file's name is the chunk's name, no need to hash twice.
        if len(head) > 1:
            whole = blake3.blake3()
            _update(whole, head)
            name = whole.digest()
        batch.contents[name] = bytes(table)
        return Content(name, end)

    def _write_pipelined(self, batch: WriteBatch, chunks: Iterable[bytes | memoryview]
                         ) -> Content:
        # Work goes out in groups of chunks (a few MiB): per-chunk tasks would hand the GIL
        # between threads thousands of times a second, and the chunker, which holds it,
        # would spend most of its time waiting to get it back.
        workers = _workers()
        whole = blake3.blake3()
        hasher = ThreadPoolExecutor(1, thread_name_prefix="pfsmount-whole")
        hashed: Future[None] | None = None
        window: deque[Future[list[tuple[bytes, int]]]] = deque()
        table = bytearray()
        end = 0
        group: list[bytes | memoryview] = []
        grouped = 0

        def drain(keep: int) -> None:
            nonlocal end
            while len(window) > keep:
                for name, size in window.popleft().result():
                    end += size
                    table.extend(TABLE_ROW.pack(name, end))
                if batch.progress is not None:
                    batch.progress(end)

        def send() -> None:
            nonlocal hashed, group, grouped
            hashed = hasher.submit(_update, whole, group)  # in order: one thread
            window.append(workers.submit(self._prepare, batch.chunks, group))
            group, grouped = [], 0
            drain(_WINDOW)

        try:
            for chunk in chunks:
                group.append(chunk)
                grouped += len(chunk)
                if grouped >= _GROUP:
                    send()
            if group:
                send()
            drain(0)
            if hashed is not None:
                hashed.result()
        finally:
            for future in window:
                future.cancel()
            hasher.shutdown()
        name = whole.digest()
        batch.contents[name] = bytes(table)
        return Content(name, end)

    def _prepare(self, pending: ChunkBatch, chunks: list[bytes | memoryview]
                 ) -> list[tuple[bytes, int]]:
        """Name chunks and store those not stored yet (runs in a worker)."""
        out: list[tuple[bytes, int]] = []
        new: list[Stored] = []
        self.packs.gate.enter(pending)
        with self.meta.read() as txn:
            for chunk in chunks:
                name = chunking.digest(chunk)
                out.append((name, len(chunk)))
                if name not in pending.pending and not self.packs.has(txn, name):
                    codec, data = chunking.compress(chunk)
                    new.append(Stored(name, len(chunk), codec, data))
        self.packs.append(pending, new)
        return out

    def write_prepared(self, batch: WriteBatch, files: Sequence[Prepared]) -> list[Content]:
        """Store files a reader already chunked, named and compressed (see ``readers``):
        one index lookup transaction and one pack write for the lot."""
        out: list[Content] = []
        new: list[Stored] = []
        pending = batch.chunks.pending
        seen: set[bytes] = set()
        chunks_db = self.meta.db["chunks"]
        self.packs.gate.enter(batch.chunks)
        with self.meta.read() as txn:
            for f in files:
                for c in f.chunks:
                    if c.digest in pending or c.digest in seen:
                        continue
                    if txn.get(c.digest, db=chunks_db) is None:
                        seen.add(c.digest)
                        new.append(c)
                batch.contents[f.digest] = f.table
                out.append(Content(f.digest, f.size))
        self.packs.append(batch.chunks, new)
        return out

    def write_bytes(self, batch: WriteBatch, data: bytes | memoryview) -> Content:
        return self.write_chunks(batch, chunking.split_buffer(data))

    def write_file(self, batch: WriteBatch, path: Path) -> Content:
        return self.write_chunks(batch, chunking.split_file(path))

    def write_fd(self, batch: WriteBatch, fd: int) -> Content:
        return self.write_chunks(batch, chunking.split_fd(fd))

    def write_stream(self, batch: WriteBatch, stream: chunking.Readable) -> Content:
        return self.write_chunks(batch, chunking.split_stream(stream))

    def commit(self, batch: WriteBatch, txn: lmdb.Transaction, durable: bool = True) -> None:
        """Index the batch inside the caller's write transaction (see ``PackStore.commit``)."""
        self.packs.commit(batch.chunks, txn, durable)
        with txn.cursor(db=self.meta.db["contents"]) as cursor:
            cursor.putmulti(batch.contents.items(), overwrite=False)
        batch.contents.clear()

    # -- reading -----------------------------------------------------------------------------

    def table(self, txn: lmdb.Transaction, digest: bytes) -> ChunkTable:
        with self._lock:
            cached = self._tables.get(digest)
            if cached is not None:
                self._tables.move_to_end(digest)
                return cached
        raw = txn.get(digest, db=self.meta.db["contents"])
        if raw is None:
            raise Corrupt(f"file content {digest.hex()} is missing")
        table = parse_table(digest, raw)
        with self._lock:
            self._tables[digest] = table
            if len(self._tables) > 4096:
                self._tables.popitem(last=False)
        return table

    def sweep(self, txn: lmdb.Transaction, live: set[bytes]) -> tuple[set[bytes], list[bytes]]:
        """One pass over the contents index (garbage collection): the chunks that the
        ``live`` contents use, and the contents that are not live."""
        chunks: set[bytes] = set()
        dead: list[bytes] = []
        rows = cast(Iterator[tuple[bytes, bytes]], txn.cursor(db=self.meta.db["contents"]))
        for key, raw in rows:  # bytes: the environment reads without buffers
            if key in live:
                chunks.update(table_digests(raw))
            else:
                dead.append(key)
        return chunks, dead

    def copy_to(self, digest: bytes, fd: int) -> int:
        """Write a whole file into ``fd`` from offset 0; returns its size. Every chunk is
        checked before it is written; the chunk cache is left alone.

        Worker threads read and check runs of chunks (see ``packs.runs``) a few ahead, each
        into a buffer of this call's (reused: nothing is allocated per run); this thread
        writes them in order (writers of one file would only contend for its lock). No
        worker touches a buffer once this returns, also on an error.
        """
        with self.meta.read() as txn:
            table = self.table(txn, digest)
        workers = _workers()
        window: deque[tuple[bytearray, int, Future[list[bytes | memoryview]]]] = deque()
        free: list[bytearray] = []

        def write_oldest() -> None:
            buffer, first, future = window.popleft()
            pieces = future.result()
            for k, data in enumerate(pieces):
                _check_size(table, first + k, data)
            _pwrite_pieces(fd, pieces, table.ends[first - 1] if first else 0)
            free.append(buffer)

        i = 0
        try:
            for run in runs(self._locations(table, 0, len(table.digests))):
                buffer = free.pop() if free else bytearray(RUN_BYTES)
                window.append((buffer, i, workers.submit(self.packs.read_run, run, buffer)))
                i += len(run)
                if len(window) > _AHEAD:
                    write_oldest()
            while window:
                write_oldest()
        finally:
            for _, _, future in window:
                future.cancel()
            wait([future for _, _, future in window])
        return table.size

    def chunks(self, digest: bytes, first: int = 0, last: int | None = None
               ) -> Iterator[bytes | memoryview]:
        """The checked bytes of chunks ``first`` to ``last`` (excluded) of a file, in order.

        Chunks that lie back to back in a pack are read with one call, and worker threads
        read, decompress and check runs a few ahead of the caller: zstd and BLAKE3 release
        the GIL, so checking a large file uses every core. Memory stays bounded by the
        window. Locations are looked up in short read transactions, a batch at a time.
        """
        with self.meta.read() as txn:
            table = self.table(txn, digest)
        last = len(table.digests) if last is None else min(last, len(table.digests))
        workers = _workers()
        window: deque[Future[list[bytes | memoryview]]] = deque()
        i = first
        try:
            for run in runs(self._locations(table, first, last)):
                window.append(workers.submit(self.packs.read_run, run))
                if len(window) > _AHEAD:
                    for data in window.popleft().result():
                        i = _check_size(table, i, data)
                        yield data
            while window:
                for data in window.popleft().result():
                    i = _check_size(table, i, data)
                    yield data
        finally:
            for future in window:
                future.cancel()

    def _locations(self, table: ChunkTable, first: int, last: int
                   ) -> Iterator[tuple[Location, bytes]]:
        for lo in range(first, last, _LOOKUP):
            with self.meta.read() as txn:
                found = [(self.packs.location(txn, d), d)
                         for d in table.digests[lo : min(last, lo + _LOOKUP)]]
            yield from found

    def read_range(self, digest: bytes, offset: int = 0, size: int | None = None
                   ) -> Iterator[bytes | memoryview]:
        """The checked bytes of a range, a chunk (or a slice of one) at a time. A range of
        a chunk or two (the mount's reads) goes through the chunk cache; longer ranges are
        read ahead in parallel (``chunks``)."""
        if offset < 0 or (size is not None and size < 0):
            raise ValueError("negative offset or size")
        with self.meta.read() as txn:
            table = self.table(txn, digest)
        stop = table.size if size is None else min(table.size, offset + size)
        if offset >= stop:
            return
        i = bisect.bisect_right(table.ends, offset)
        j = bisect.bisect_left(table.ends, stop) + 1
        if j - i <= 2:  # read whole before the first yield: a caller may stop for long,
            with self.meta.read() as txn:  # and a snapshot held meanwhile grows LMDB
                pieces = list(self.iter_range(txn, digest, offset, stop - offset))
            yield from pieces
            return
        start = table.ends[i - 1] if i else 0
        for data in self.chunks(digest, i, j):
            end = start + len(data)
            lo, hi = max(offset, start) - start, min(stop, end) - start
            yield data if (lo == 0 and hi == len(data)) else data[lo:hi]
            start = end

    def read(self, txn: lmdb.Transaction, digest: bytes, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; short only at end of file."""
        return b"".join(self.iter_range(txn, digest, offset, size))

    def iter_range(
        self, txn: lmdb.Transaction, digest: bytes, offset: int = 0, size: int | None = None
    ) -> Iterator[bytes]:
        """The checked bytes of a range as a sequence of slices, one chunk at a time,
        through the chunk cache."""
        table = self.table(txn, digest)
        stop = table.size if size is None else min(table.size, offset + size)
        i = bisect.bisect_right(table.ends, offset)
        while offset < stop and i < len(table.digests):
            start = table.ends[i - 1] if i else 0
            data = self.packs.read(txn, table.digests[i])
            _check_size(table, i, data)
            lo = offset - start
            hi = min(stop, table.ends[i]) - start
            yield data if (lo == 0 and hi == len(data)) else data[lo:hi]
            offset = start + hi
            i += 1


def _check_size(table: ChunkTable, i: int, data: bytes | memoryview) -> int:
    """Chunk ``i`` holds the bytes its file's table says (the index says so too, but the
    two rows could disagree); the next chunk's index."""
    if i >= len(table.digests) or len(data) != table.ends[i] - (table.ends[i - 1] if i else 0):
        raise Corrupt(f"chunk {table.digests[min(i, len(table.digests) - 1)].hex()} holds "
                      f"{len(data)} bytes, not what its file's chunk table says")
    return i + 1


def _update(hasher: blake3.blake3, chunks: list[bytes | memoryview]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


def _pwrite_pieces(fd: int, pieces: list[bytes | memoryview], offset: int) -> None:
    """Write ``pieces`` back to back at ``offset``, finishing any short write. One
    ``pwrite`` per piece: a ``pwritev`` of a run's dozen chunk-sized pieces measured up to
    twice as slow (kernel time) as the same bytes written piece by piece."""
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while view:
            n = os.pwrite(fd, view, offset)
            if n <= 0:
                raise OSError("short write")
            offset += n
            view = view[n:]
