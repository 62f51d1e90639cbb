"""The staging journal: file changes to open commits, safe from a crash of the daemon at the
cost of one ``write()``, applied to LMDB in batches.

An LMDB write transaction costs an fsync (milliseconds); a program that writes thousands of
small files through the mount would pay one per file. Instead the mount *stages* each closed
file: its chunks are already in a pack, and one framed record (the path, the entry, the new
chunk and contents rows) is appended to the journal file. The page cache keeps both if the
daemon is killed; ``replay`` applies what a dead daemon left. ``flush`` applies everything
staged in one transaction; it runs every few milliseconds, before any other change to the
same branch (so changes land in order), before a commit is finished, and before the API
reads (so a staged file is visible everywhere as soon as it is closed).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec

from pfsmount.errors import PfsError, StoreFull
from pfsmount.pfs.files import Files
from pfsmount.store import KIND_DIR, MKDIR, Entry, WriteBatch
from pfsmount.store.rows import Location
from pfsmount.store.tree import Change

log = logging.getLogger("pfsmount.journal")
_FRAME = struct.Struct(">II")  # length, crc32 of the record


class Record(msgspec.Struct, array_like=True):
    ref: str  # "repo@branch"
    path: str
    entry: Entry
    chunks: list[tuple[bytes, bytes]]  # digest, encoded Location
    contents: list[tuple[bytes, bytes]]  # digest, chunk table
    mkdir: bool = False  # a new directory (``MKDIR``); ``entry`` is unused


_DIR = Entry(KIND_DIR, 0, 0o755, 0, b"")


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


class Journal:
    """Staged records go to a segment file, ``<path>.<n>``. A flush moves staging on to a
    new segment and applies the old one's records without holding up ``stage`` (an LMDB
    commit takes milliseconds; the mount stages a file at every close), then deletes it."""

    def __init__(self, path: Path, files: Files) -> None:
        self.path = path
        self.files = files
        self._lock = threading.Lock()  # the current segment and what it holds
        self._flush_lock = threading.Lock()  # flushes apply one at a time, in order
        self._pending: list[Record] = []
        self._flushed: list[Callable[[], None]] = []
        self._in_flight = 0  # records a flush is applying right now
        self._unapplied: list[Path] = []  # segments of records a failed flush put back
        self._applying = threading.local()
        # Past every segment replay kept (records it could not apply for lack of space).
        self._segment = self.replay()
        self._fd = self._open_segment()

    def _segment_path(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _open_segment(self) -> int:
        return os.open(self._segment_path(self._segment),
                       os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def stage(self, ref: str, path: str, change: Change, batch: WriteBatch | None = None,
              on_flushed: Callable[[], None] | None = None) -> None:
        """Record one stored file (its chunks in ``batch``), or a new directory (``MKDIR``),
        for ``ref``'s open commit; ``on_flushed`` runs once it is in LMDB (from the
        flushing thread)."""
        if change is MKDIR:
            record = Record(ref=ref, path=path, entry=_DIR, chunks=[], contents=[], mkdir=True)
        else:
            assert isinstance(change, Entry) and batch is not None
            record = Record(
                ref=ref, path=path, entry=change,
                chunks=[(d, loc.encode()) for d, loc in batch.chunks.pending.items()],
                contents=list(batch.contents.items()),
            )
        raw = _encoder.encode(record)
        frame = _FRAME.pack(len(raw), zlib.crc32(raw)) + raw
        with self._lock:
            end = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                if os.write(self._fd, frame) != len(frame):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                # A torn record would hide every record after it from ``replay``: cut it
                # off, so that the segment stays whole records (the disk is full, say).
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, end)
                raise
            self._pending.append(record)
            if on_flushed is not None:
                self._flushed.append(on_flushed)

    def pending(self) -> int:
        """Records staged and not yet in LMDB, counting those a flush is applying."""
        with self._lock:
            return len(self._pending) + self._in_flight

    def flush(self) -> None:
        """Apply everything staged before the call, one transaction per branch."""
        with self._flush_lock:
            with self._lock:
                records, self._pending = self._pending, []
                callbacks, self._flushed = self._flushed, []
                older, self._unapplied = self._unapplied, []
                if not records:
                    return
                self._in_flight = len(records)
                done_fd, done = self._fd, self._segment_path(self._segment)
                self._segment += 1
                self._fd = self._open_segment()
            try:
                self._apply(records)
            except _NotApplied as e:
                # The store's disk is full, say: the records not applied go back in front
                # of what was staged since, for the next flush, and their segments stay on
                # disk, older first, for a restart to replay in order.
                with self._lock:
                    self._pending[:0] = e.records
                    self._flushed[:0] = callbacks
                    self._unapplied = [*older, done, *self._unapplied]
                raise e.error from None
            finally:
                with self._lock:
                    self._in_flight = 0
                os.close(done_fd)
            for segment in (*older, done):
                segment.unlink()
        for callback in callbacks:
            callback()

    def applying_here(self) -> bool:
        """Whether the calling thread is applying staged records (changes the mount made and
        the kernel already saw), e.g. to tell them from other writers' changes."""
        return bool(getattr(self._applying, "active", False))

    def _apply(self, records: list[Record]) -> None:
        self._applying.active = True
        try:
            self._apply_records(records)
        finally:
            self._applying.active = False

    def _apply_records(self, records: list[Record]) -> None:
        by_ref: dict[str, list[Record]] = {}
        for r in records:
            by_ref.setdefault(r.ref, []).append(r)
        groups = list(by_ref.items())
        for n, (ref, group) in enumerate(groups):
            try:
                self._apply_group(ref, group)
            except StoreFull as e:  # nothing is wrong with the records: they wait for space
                raise _NotApplied([r for _, g in groups[n:] for r in g], e) from None
            except PfsError as e:
                if len(group) == 1:  # the branch or repo went away meanwhile
                    log.warning("dropping staged %s in %s: %s", group[0].path, ref, e)
                    continue
                # One record that cannot land (its path is a file now, say) must not take
                # the others down with it: each is applied on its own, in order.
                for r in group:
                    try:
                        self._apply_group(ref, [r])
                    except StoreFull as full:
                        rest = group[group.index(r):] + [x for _, g in groups[n + 1:] for x in g]
                        raise _NotApplied(rest, full) from None
                    except PfsError as e:
                        log.warning("dropping staged %s in %s: %s", r.path, ref, e)

    def _apply_group(self, ref: str, group: list[Record]) -> None:
        batch = WriteBatch()
        for r in group:
            batch.chunks.pending.update((d, Location.decode(loc)) for d, loc in r.chunks)
            batch.contents.update(r.contents)
        # The last write of a path wins.
        changes: dict[str, Change] = {r.path: MKDIR if r.mkdir else r.entry for r in group}
        self.files.apply(ref, changes, batch=batch, finish=False)

    def replay(self) -> int:
        """Apply the records a daemon that died left behind, oldest segment first; the
        number for the next segment. Records that do not fit (a full disk) stay staged for
        the next flush, and their segments stay."""
        numbered = sorted(
            (int(p.name.rpartition(".")[2]), p)
            for p in self.path.parent.glob(f"{self.path.name}.*")
            if p.name.rpartition(".")[2].isdigit())
        segments = [p for _, p in numbered]
        if self.path.exists():  # one file, as earlier versions wrote it
            segments.insert(0, self.path)
        records: list[Record] = []
        for segment in segments:
            records += _read_records(segment.read_bytes())
        if records:
            log.info("replaying %d staged files from %s", len(records), self.path)
            try:
                self._apply(records)
            except _NotApplied as e:
                log.warning("%d staged files wait for space: %s", len(e.records), e.error)
                self._pending, self._unapplied = e.records, segments
                return numbered[-1][0] + 1 if numbered else 0
        for segment in segments:
            segment.unlink()
        return 0

    def close(self) -> None:
        self.flush()
        os.close(self._fd)
        self._segment_path(self._segment).unlink(missing_ok=True)


class _NotApplied(Exception):
    """A flush stopped for lack of space; ``records`` (in order) were not applied."""

    def __init__(self, records: list[Record], error: StoreFull) -> None:
        super().__init__(str(error))
        self.records = records
        self.error = error


def _read_records(data: bytes) -> list[Record]:
    """The whole records of one segment; a torn last record was never acknowledged."""
    records: list[Record] = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        raw = data[offset + _FRAME.size: offset + _FRAME.size + length]
        if len(raw) != length or zlib.crc32(raw) != crc:
            break
        records.append(_decoder.decode(raw))
        offset += _FRAME.size + length
    return records
