"""File contents: a file's bytes as an ordered list of chunks, named by BLAKE3 of the whole.

Writing turns a source (bytes, a local file, a stream) into chunks in packs plus one
``contents`` row; reading maps a byte range back onto chunks. Identical files share one row
and identical chunks are stored once, across files, commits and repos. Nothing here knows
about paths, trees or commits.
"""

from __future__ import annotations

import bisect
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import blake3
import lmdb

from pfsmount.errors import Corrupt
from pfsmount.store import chunking
from pfsmount.store.meta import Meta
from pfsmount.store.packs import ChunkBatch, PackStore

_ROW = struct.Struct(">32sQ")
EMPTY_DIGEST = blake3.blake3(b"").digest()


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


class ContentStore:
    def __init__(self, meta: Meta, packs: PackStore) -> None:
        self.meta = meta
        self.packs = packs
        self._tables: OrderedDict[bytes, ChunkTable] = OrderedDict()
        self._lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------

    def write_chunks(self, batch: WriteBatch, chunks: Iterable[bytes | memoryview]) -> Content:
        """Store a file given as its chunks, in order."""
        whole: blake3.blake3 | None = None  # started only once a second chunk shows up
        table = bytearray()
        end = 0
        first = b""
        for chunk in chunks:
            name = chunking.digest(chunk)
            self.packs.add(batch.chunks, name, chunk)
            if end == 0 and not table:
                first = name
                first_bytes = bytes(chunk) if isinstance(chunk, memoryview) else chunk
            else:
                if whole is None:
                    whole = blake3.blake3(first_bytes)
                whole.update(chunk)
            end += len(chunk)
            table += _ROW.pack(name, end)
        # One chunk: the file's name is the chunk's name, no need to hash twice.
        if whole is not None:
            name = whole.digest()
        elif table:
            name = first
        else:
            name = EMPTY_DIGEST
        batch.contents[name] = bytes(table)
        batch.bytes_in += end
        return Content(name, end)

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
        db = self.meta.db["contents"]
        for name, table in batch.contents.items():
            txn.put(name, table, db=db, overwrite=False)
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
