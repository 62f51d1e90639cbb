"""File contents: a file's bytes as an ordered list of chunks, named by BLAKE3 of the whole.

Writing turns a source (bytes, a local file, a stream) into chunks in packs plus one
``contents`` row; reading maps a byte range back onto chunks. Identical files share one row
and identical chunks are stored once, across files, commits and repos. Nothing here knows
about paths, trees or commits.
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, cast

import blake3
import lmdb

from pfsmount.errors import Corrupt
from pfsmount.store import chunking
from pfsmount.store.meta import Meta
from pfsmount.store.packs import ChunkBatch, PackStore, Stored
from pfsmount.store.readers import Prepared

_ROW = struct.Struct(">32sQ")
EMPTY_DIGEST = blake3.blake3(b"").digest()
_GROUP = 4 << 20  # bytes of chunks per task in a pipelined write
_WINDOW = 4  # tasks in flight beyond the one being filled
_AHEAD = 16  # chunks read ahead of the writes in an export
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


class ChunkTable(NamedTuple):
    """A file's chunks in order, with each chunk's end offset in the file."""

    digests: list[bytes]
    ends: list[int]

    @property
    def size(self) -> int:
        return self.ends[-1] if self.ends else 0


class WriteBatch:
    """What one write operation stored: chunk locations and contents rows, not yet indexed."""

    def __init__(self) -> None:
        self.chunks = ChunkBatch()
        self.contents: dict[bytes, bytes] = {}
        self.bytes_in = 0
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
            table += _ROW.pack(name, end)
        # One chunk: the file's name is the chunk's name, no need to hash twice.
        if len(head) > 1:
            whole = blake3.blake3()
            _update(whole, head)
            name = whole.digest()
        batch.contents[name] = bytes(table)
        batch.bytes_in += end
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
                    table.extend(_ROW.pack(name, end))
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
        batch.bytes_in += end
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
                batch.bytes_in += f.size
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
        digests: list[bytes] = []
        ends: list[int] = []
        for name, end in _ROW.iter_unpack(raw):
            digests.append(name)
            ends.append(end)
        table = ChunkTable(digests, ends)
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
        step = _ROW.size
        rows = cast(Iterator[tuple[bytes, bytes]], txn.cursor(db=self.meta.db["contents"]))
        for key, raw in rows:  # bytes: the environment reads without buffers
            if key in live:
                if len(raw) == step:  # most files are one chunk
                    chunks.add(raw[:32])
                else:
                    chunks.update(raw[i:i + 32] for i in range(0, len(raw), step))
            else:
                dead.append(key)
        return chunks, dead

    def copy_to(self, digest: bytes, fd: int) -> int:
        """Write a whole file into ``fd`` from offset 0; returns its size.

        Raw chunks are copied inside the kernel; compressed ones are read and decompressed
        by worker threads a few chunks ahead of the writes. The chunk cache is left alone.
        """
        with self.meta.read() as txn:
            table = self.table(txn, digest)
            locations = [self.packs.location(txn, d) for d in table.digests]
        workers = _workers()
        ahead: dict[int, Future[bytes]] = {}
        submitted = i = 0
        start = 0
        count = len(locations)
        try:
            while i < count:
                while submitted < count and submitted < i + _AHEAD:
                    later = locations[submitted]
                    if later.codec != chunking.CODEC_RAW:
                        ahead[submitted] = workers.submit(self.packs.read_uncached, later,
                                                          table.digests[submitted])
                    submitted += 1
                loc = locations[i]
                future = ahead.pop(i, None)
                if future is not None:
                    _pwrite_all(fd, future.result(), start)
                    start, i = table.ends[i], i + 1
                    continue
                # Raw chunks that lie back to back in one pack (a file put in one go) are
                # copied with one call: per-chunk calls run at half the speed.
                j, length = i + 1, loc.stored
                while (j < count and locations[j].codec == chunking.CODEC_RAW
                       and locations[j].pack == loc.pack
                       and locations[j].offset == loc.offset + length):
                    length += locations[j].stored
                    j += 1
                if self.packs.copy_raw(loc._replace(stored=length, raw=length), fd, start):
                    start, i = table.ends[j - 1], j
                else:
                    _pwrite_all(fd, self.packs.read_uncached(loc, table.digests[i]), start)
                    start, i = table.ends[i], i + 1
        finally:
            for future in ahead.values():
                future.cancel()
        return table.size

    def read(self, txn: lmdb.Transaction, digest: bytes, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; short only at end of file."""
        return b"".join(self.iter_range(txn, digest, offset, size))

    def iter_range(
        self, txn: lmdb.Transaction, digest: bytes, offset: int = 0, size: int | None = None
    ) -> Iterator[bytes]:
        """The bytes of a range as a sequence of slices, one chunk at a time."""
        table = self.table(txn, digest)
        stop = table.size if size is None else min(table.size, offset + size)
        i = bisect.bisect_right(table.ends, offset)
        while offset < stop and i < len(table.digests):
            start = table.ends[i - 1] if i else 0
            data = self.packs.read(txn, table.digests[i])
            lo = offset - start
            hi = min(stop, table.ends[i]) - start
            yield data if (lo == 0 and hi == len(data)) else data[lo:hi]
            offset = start + hi
            i += 1


def _update(hasher: blake3.blake3, chunks: list[bytes | memoryview]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        offset += n
        view = view[n:]
