"""Pack files: where chunk bytes live, the chunk index that finds them, and a read cache.

Every chunk read from a pack is checked against its BLAKE3 name before it leaves (the cache
holds only checked bytes): damage is ``Corrupt``, never wrong bytes.

New chunks are appended to one open pack in a local staging directory; when it passes
``PACK_TARGET`` it is fsync'd and handed to the ``ObjectStore`` as an immutable object by a
background thread, so that writers go on appending while the disk catches up. A chunk's
location enters the ``chunks`` sub-database only in the caller's write transaction, after
``sync()`` made its bytes durable (waiting for any pack still being sealed), so the index never
points at bytes a crash lost. Bytes appended by an operation that then failed are
unreferenced garbage, never visible.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import lmdb

from pfsmount.errors import Corrupt
from pfsmount.store import chunking
from pfsmount.store.gate import WriteGate
from pfsmount.store.meta import Meta
from pfsmount.store.objects import ObjectStore, read_fully, unreadable
from pfsmount.store.rows import Location, checked_location, pack_name

PACK_TARGET = 64 * 1024 * 1024
CACHE_BYTES = 64 * 1024 * 1024  # decompressed chunks kept: a few per reader; more is RSS
RUN_BYTES = 4 * 1024 * 1024  # at most this much is read from a pack with one call
def runs(items: Iterable[tuple[Location, bytes]], limit: int = RUN_BYTES
         ) -> Iterator[list[tuple[Location, bytes]]]:
    """Group chunks in order into runs that lie back to back in one pack (a file put in one
    go), each at most ``limit`` bytes: one read per run instead of one per chunk."""
    run: list[tuple[Location, bytes]] = []
    end = size = 0
    for loc, digest in items:
        if run and (loc.pack != run[0][0].pack or loc.offset != end
                    or size + loc.stored > limit):
            yield run
            run, size = [], 0
        run.append((loc, digest))
        end = loc.offset + loc.stored
        size += loc.stored
    if run:
        yield run


class Stored(NamedTuple):
    """A chunk ready to append: its name, raw size, codec and the bytes to store."""

    digest: bytes
    raw: int
    codec: int
    data: bytes | memoryview


class ChunkBatch:
    """The chunks one write operation added: their index rows wait for its transaction."""

    def __init__(self) -> None:
        self.pending: dict[bytes, Location] = {}

    def __len__(self) -> int:
        return len(self.pending)


class _ChunkCache:
    """A byte-bounded LRU of decompressed chunks; chunks are immutable, so never stale."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.items: OrderedDict[bytes, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        with self.lock:
            data = self.items.get(key)
            if data is not None:
                self.items.move_to_end(key)
            return data

    def put(self, key: bytes, data: bytes) -> None:
        if len(data) > self.limit // 8:
            return
        with self.lock:
            if key in self.items:
                return
            self.items[key] = data
            self.used += len(data)
            while self.used > self.limit:
                _, old = self.items.popitem(last=False)
                self.used -= len(old)


class PackStore:
    """Appends chunks to packs, seals full packs into the object store, reads chunks back."""

    def __init__(self, meta: Meta, objects: ObjectStore, staging: Path) -> None:
        self.meta = meta
        self.objects = objects
        self.staging = staging
        staging.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}  # staged pack id -> fd (the current one and sealing)
        self._current: int | None = None
        self._size = 0
        self._dirty = False
        self._cache = _ChunkCache(CACHE_BYTES)
        self.gate = WriteGate()  # a batch enters before it looks up or appends a chunk
        self._sealer: ThreadPoolExecutor | None = None
        self._seals: list[Future[None]] = []
        for leftover in sorted(staging.glob("*.pack")):
            # A pack left open by a crash: keep the prefix the index may point into.
            self._seal_path(int(leftover.stem, 16), leftover)

    # -- writing -----------------------------------------------------------------------------

    def _seal_path(self, pack: int, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.objects.put_file(pack_name(pack), path)

    def _seal_current_locked(self) -> None:
        """Hand the current pack to the sealer thread (fsync, then into the object store).

        Its descriptor stays in ``_open`` until it is sealed, so reads keep working.
        """
        pack = self._current
        if pack is None:
            return
        self._current = None
        if self._sealer is None:
            self._sealer = ThreadPoolExecutor(1, thread_name_prefix="pfsmount-seal")
        future = self._sealer.submit(self._seal, pack, self._size)
        self._seals.append(future)

    def _seal(self, pack: int, size: int) -> None:
        fd = self._open[pack]
        os.fsync(fd)
        path = self.staging / pack_name(pack)
        if size:
            self.objects.put_file(pack_name(pack), path)
        else:
            path.unlink()
        with self._lock:
            del self._open[pack]
        os.close(fd)

    def _rotate_locked(self) -> None:
        self._seal_current_locked()
        self._current = secrets.randbits(63)
        path = self.staging / pack_name(self._current)
        self._open[self._current] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._size = 0

    def seal(self) -> None:
        """Seal the open pack now (not only once it is full) and wait until it is an object:
        garbage collection can then delete it whole."""
        with self._lock:
            self._seal_current_locked()
        self.sync()

    def staged(self) -> set[int]:
        """Packs still being written or sealed (not yet whole objects of the store)."""
        with self._lock:
            return set(self._open)

    def has(self, txn: lmdb.Transaction, digest: bytes) -> bool:
        return txn.get(digest, db=self.meta.db["chunks"]) is not None

    def add(self, batch: ChunkBatch, digest: bytes, raw: bytes | memoryview) -> bool:
        """Store ``raw`` under ``digest`` unless it is stored already; True when written."""
        if digest in batch.pending:
            return False
        self.gate.enter(batch)
        with self.meta.read() as txn:
            if self.has(txn, digest):
                return False
        codec, stored = chunking.compress(raw)
        self.append(batch, [Stored(digest, len(raw), codec, stored)])
        return True

    def append(self, batch: ChunkBatch, chunks: Sequence[Stored]) -> None:
        """Append prepared chunks to the open pack with one write; the caller checked that
        they are not indexed yet (a duplicate is harmless garbage, the index keeps the first).
        Chunks the batch already holds are skipped."""
        self.gate.enter(batch)
        self._append(batch, chunks)

    def _append(self, batch: ChunkBatch, chunks: Sequence[Stored]) -> None:
        with self._lock:
            chunks = [c for c in chunks if c.digest not in batch.pending]
            if not chunks:
                return
            if self._current is None or self._size >= PACK_TARGET:
                self._rotate_locked()
            assert self._current is not None
            pack, offset = self._current, self._size
            try:
                _write_all(self._open[pack], [c.data for c in chunks], offset)
            except OSError:  # a full disk: what part of it was written goes at once
                with contextlib.suppress(OSError):
                    os.ftruncate(self._open[pack], offset)
                raise
            for c in chunks:
                batch.pending[c.digest] = Location(pack, offset, len(c.data), c.raw, c.codec)
                offset += len(c.data)
            self._size = offset
            self._dirty = True

    def sync(self) -> None:
        """Make every appended byte durable before an index row may point at it: wait for
        the packs being sealed, then flush the open one."""
        with self._lock:
            seals = list(self._seals)
        for future in seals:
            # A failed seal fails every later commit too (its chunks may be in any batch);
            # a restart seals the staged pack again.
            future.result()
        with self._lock:
            self._seals = [f for f in self._seals if f not in seals]
        with self._lock:
            if self._dirty and self._current is not None:
                os.fdatasync(self._open[self._current])
                self._dirty = False

    def commit(self, batch: ChunkBatch, txn: lmdb.Transaction, durable: bool = True) -> None:
        """Record the batch's chunk locations in the caller's write transaction.

        ``durable`` first makes every byte appended so far reach the disk. Without it, the
        bytes are in the page cache: they survive a crash of the daemon, and the next
        durable commit (a commit finish) syncs them before anything finished points at them.
        """
        if batch.pending:
            if durable:
                self.sync()
            rows = [(digest, loc.encode()) for digest, loc in batch.pending.items()]
            with txn.cursor(db=self.meta.db["chunks"]) as cursor:  # one C loop, not a put
                cursor.putmulti(rows, overwrite=False)  # invariant 6: first wins
            batch.pending.clear()
        # Garbage collection, waiting for this, starts its own write transaction, which
        # LMDB opens only once the caller's has committed.
        self.gate.leave(batch)

    def move(self, txn: lmdb.Transaction, chunks: Sequence[tuple[bytes, Location]]) -> int:
        """Copy these indexed chunks into the open pack and point their index rows there,
        in the caller's write transaction; returns the bytes moved. For garbage collection,
        which holds the write gate: it empties packs that are mostly garbage.

        The old pack keeps its bytes, so a reader that looked a location up before goes on
        reading; no row points into it any more, and the next collection deletes it. A
        crash before the transaction commits leaves the copies as garbage.
        """
        batch = ChunkBatch()
        moved = grouped = 0
        group: list[Stored] = []
        for i, (digest, loc) in enumerate(chunks):
            group.append(Stored(digest, loc.raw, loc.codec, self._read_stored(loc)))
            moved += loc.stored
            grouped += loc.stored
            if grouped >= 16 << 20 or i == len(chunks) - 1:  # one write per 16 MiB
                self._append(batch, group)
                group, grouped = [], 0
        if batch.pending:
            self.sync()
            with txn.cursor(db=self.meta.db["chunks"]) as cursor:
                cursor.putmulti([(d, loc.encode()) for d, loc in batch.pending.items()],
                                overwrite=True)  # the one change invariant 6 allows
        return moved

    # -- reading -----------------------------------------------------------------------------
    #
    # Every chunk that leaves this class was checked against its BLAKE3 name (and its size
    # against the index): a damaged pack, a bad zstd frame or a damaged index row is
    # ``Corrupt``, never wrong bytes. A pack that cannot be read for another reason (out of
    # descriptors, an I/O error) is a ``PfsError`` saying so, never damage.

    def location(self, txn: lmdb.Transaction, digest: bytes) -> Location:
        raw = txn.get(digest, db=self.meta.db["chunks"])
        if raw is None:
            raise Corrupt(f"chunk {digest.hex()} is not in the chunk index")
        return checked_location(digest, bytes(raw))

    def _read_stored(self, loc: Location) -> bytes:
        with self._lock:
            fd = self._open.get(loc.pack)
            if fd is not None:  # still staged (pread under the lock: sealing closes it)
                try:
                    return os.pread(fd, loc.stored, loc.offset)
                except OSError as e:
                    raise unreadable(pack_name(loc.pack), e) from None
        return self.objects.get_range(pack_name(loc.pack), loc.offset, loc.stored)

    def _decode(self, loc: Location, digest: bytes, stored: bytes | memoryview
                ) -> bytes | memoryview:
        """The raw bytes of a chunk read from its pack, checked against its name."""
        where = f"chunk {digest.hex()} in pack {pack_name(loc.pack)}"
        if len(stored) != loc.stored:
            raise Corrupt(f"{where} is truncated: {len(stored)} of {loc.stored} bytes")
        try:
            data = chunking.decompress(loc.codec, stored, loc.raw)
        except ValueError as e:
            raise Corrupt(f"{where} is damaged: {e}") from None
        if len(data) != loc.raw or chunking.digest(data) != digest:
            raise Corrupt(f"{where} is damaged: its bytes do not match its name")
        return data

    def _read_into(self, loc: Location, buffer: bytearray) -> memoryview:
        """A chunk's (or run's) stored bytes read into ``buffer``; short if the pack is."""
        view = memoryview(buffer)[: loc.stored]
        with self._lock:
            fd = self._open.get(loc.pack)
            if fd is not None:
                return view[: read_fully(fd, view, loc.offset, pack_name(loc.pack))]
        return view[: self.objects.read_into(pack_name(loc.pack), loc.offset, view)]

    def read_run(self, run: Sequence[tuple[Location, bytes]], buffer: bytearray | None = None
                 ) -> list[bytes | memoryview]:
        """Chunks that lie back to back in one pack (see ``runs``), read with one call and
        each checked against its name; the cache is left alone. With ``buffer`` (at least
        ``RUN_BYTES``) the bytes are read into it, and raw chunks come back as views of it,
        valid until it is reused."""
        first = run[0][0]
        last = run[-1][0]
        span = last.offset + last.stored - first.offset
        whole = first._replace(stored=span)
        if buffer is not None and span <= len(buffer):
            view = self._read_into(whole, buffer)
        elif len(run) == 1:
            return [self._decode(first, run[0][1], self._read_stored(first))]
        else:
            view = memoryview(self._read_stored(whole))
        out: list[bytes | memoryview] = []
        for loc, digest in run:
            start = loc.offset - first.offset
            out.append(self._decode(loc, digest, view[start : start + loc.stored]))
        return out

    def read(self, txn: lmdb.Transaction, digest: bytes) -> bytes:
        """The checked raw bytes of one chunk, from the cache or its pack."""
        data = self._cache.get(digest)
        if data is None:
            loc = self.location(txn, digest)
            data = bytes(self._decode(loc, digest, self._read_stored(loc)))
            self._cache.put(digest, data)
        return data

    def pack_size(self, pack: int) -> int | None:
        with self._lock:
            if pack == self._current:
                return self._size
            fd = self._open.get(pack)  # being sealed
            if fd is not None:
                return os.fstat(fd).st_size
        return self.objects.size(pack_name(pack))

    def close(self) -> None:
        with self._lock:
            self._seal_current_locked()
        self.sync()
        if self._sealer is not None:
            self._sealer.shutdown()


def _write_all(fd: int, parts: list[bytes | memoryview], offset: int) -> None:
    """``pwritev`` all of ``parts`` at ``offset``, finishing any short write piece by piece."""
    done = 0
    for i in range(0, len(parts), 512):  # under IOV_MAX
        group = parts[i : i + 512]
        want = sum(len(p) for p in group)
        written = os.pwritev(fd, group, offset + done)
        if written != want:
            data = b"".join(group)[written:]
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset + done + written)
                if n <= 0:
                    raise OSError("short write to a pack")
                written += n
                view = view[n:]
        done += want
