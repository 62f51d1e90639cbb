"""Files in commits: put, get, list, glob, inspect, diff, delete and copy.

Every write goes through ``write``: data is chunked and stored first, outside any
transaction, then one LMDB write transaction indexes the chunks, applies the path changes to
the target commit's tree and, for a write that had to open its commit, finishes it. So a
write is all or nothing, concurrent writers to one branch serialize without losing either,
and a crash mid-write leaves no visible trace.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import lmdb
import msgspec

from pfsmount.errors import (
    Corrupt,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    NotFound,
    PfsError,
    SourceError,
    StoreFull,
)
from pfsmount.pfs.commits import Commits
from pfsmount.pfs.events import Event, EventKind, Events
from pfsmount.pfs.glob import Glob, compile_glob
from pfsmount.pfs.model import Commit, Counts, FileDiff, FileInfo
from pfsmount.pfs.records import Records
from pfsmount.pfs.refs import Ref, check_component, normalize_path, parse_ref, shown
from pfsmount.pfs.state import Scope
from pfsmount.store import (
    KIND_DIR,
    KIND_FILE,
    KIND_LINK,
    MKDIR,
    Content,
    Entry,
    Store,
    WriteBatch,
)
from pfsmount.store.chunking import Readable
from pfsmount.store.readers import POOL_MIN, Failed, Large, Prepared
from pfsmount.store.tree import Change

Progress = Callable[[Counts], None]
_T = TypeVar("_T")
Build = Callable[[lmdb.Transaction, Commit], dict[str, Change]]

_TYPES = {KIND_FILE: "file", KIND_DIR: "dir", KIND_LINK: "symlink"}
_BATCH = 256  # consecutive files per reader batch
_FULL = (errno.ENOSPC, errno.EDQUOT)  # the store's disk, never the source, runs out


@dataclass(frozen=True)
class LocalPath:
    """A file or directory on this machine, read by the daemon itself."""

    path: Path


@dataclass(frozen=True)
class Stream:
    """Bytes as they arrive (an upload's body, stdin): read once, front to back."""

    stream: Readable


@dataclass(frozen=True)
class Url:
    """An http(s) URL the daemon fetches itself, as ``put-file -f URL`` did."""

    url: str


@dataclass(frozen=True)
class Data:
    """Bytes already in memory, from a caller in the daemon's own process."""

    data: bytes


Source = LocalPath | Stream | Url | Data


class _Chain:
    """A readable over byte strings, then an optional stream (old content, then an append)."""

    def __init__(self, parts: Iterable[bytes], tail: Readable | None = None) -> None:
        self.parts = iter(parts)
        self.tail = tail
        self.buf = memoryview(b"")

    def readinto(self, out: memoryview) -> int:
        while not self.buf:
            part = next(self.parts, None)
            if part is None:
                return 0 if self.tail is None else self.tail.readinto(out) or 0
            self.buf = memoryview(part)
        n = min(len(out), len(self.buf))
        out[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def info(path: str, entry: Entry, commit: str = "") -> FileInfo:
    return FileInfo(
        path="/" + path,
        type=_TYPES[entry.kind],  # type: ignore[arg-type]
        size=entry.size,
        hash=entry.ref.hex() if entry.kind != KIND_LINK else "",
        mode=entry.mode,
        mtime=entry.mtime / 1e9,
        target=entry.ref.decode(errors="surrogateescape") if entry.kind == KIND_LINK else None,
        commit=commit,
    )


class Files:
    def __init__(
        self, store: Store, records: Records, commits: Commits, events: Events
    ) -> None:
        self.store = store
        self.meta = store.meta
        self.records = records
        self.commits = commits
        self.events = events

    # -- the one write path ------------------------------------------------------------------

    def write(
        self,
        ref: Ref,
        build: Build,
        batch: WriteBatch | None = None,
        *,
        system: bool = False,
        finish: bool | None = None,
    ) -> Commit:
        """Apply ``build``'s path changes to the open commit ``ref`` names, atomically.

        ``finish`` None finishes the commit only when this write opened it (one commit per
        command); True/False force it.
        """
        with self.space(), self.meta.write() as txn:
            commit, opened = self.commits.writable_locked(txn, ref, system)
            finished = opened if finish is None else finish
            if batch is not None:  # data of an open commit needs to survive the daemon only
                self.store.contents.commit(batch, txn, durable=finished)
            changes = build(txn, commit)
            root, size = self.store.trees.apply(
                txn, bytes.fromhex(commit.root), changes, time.time_ns()
            )
            commit.root, commit.size = root.hex(), size
            self.records.put_commit(txn, commit)
            if finished:
                self.commits.finish_locked(txn, commit)
        kinds: list[EventKind] = ["files_changed"]
        if opened:
            kinds.append("commit_started")
        if finished:
            kinds.append("commit_finished")
        if opened or finished:
            kinds.append("branch_changed")
        self.events.emit(*(Event(k, commit.repo, commit.branch, commit.id, commit.root)
                           for k in kinds))
        return commit

    def write_snapshot(
        self,
        repo: str,
        branch: str,
        changes: dict[str, Change],
        batch: WriteBatch | None = None,
        provenance: builtins.list[str] | None = None,
        description: str = "",
        base: str | None = None,
        record: Callable[[Scope, Commit], None] | None = None,
    ) -> Commit:
        """A new finished commit whose tree is exactly ``changes`` over an empty tree, or over
        the tree of commit ``base`` of the same repo.

        Used for pipeline outputs: the output of a job is the union of its datums' outputs,
        not an edit of the previous output (a 1.x job's output is: ``base``). ``record`` runs
        in the transaction that finishes the commit, so what it stores (the job that made
        the commit, done) lands with the commit or not at all, whenever the process dies.
        """
        self.store.packs.sync()  # everything the commit points at reaches the disk first
        with self.meta.write() as txn:
            if batch is not None:
                self.store.contents.commit(batch, txn)
            commit = self.commits.open_locked(txn, repo, branch, provenance=provenance,
                                              description=description, system=True)
            trees = self.store.trees
            start = trees.empty if base is None else \
                bytes.fromhex(self.records.commit(txn, base).root)
            root, size = trees.apply(txn, start, changes, time.time_ns())
            commit.root, commit.size = root.hex(), size
            self.records.put_commit(txn, commit)
            self.commits.finish_locked(txn, commit)
            if record is not None:
                record(Scope(txn), commit)
        self.events.emit(*(Event(k, repo, branch, commit.id, commit.root) for k in
                           ("commit_started", "files_changed", "commit_finished",
                            "branch_changed")))
        return commit

    def check_writable(self, ref: Ref, system: bool = False) -> None:
        """Fail before any data is read if a write to ``ref`` could not land."""
        with self.meta.write() as txn:
            self.commits.writable_locked(txn, ref, system)
            txn.abort()

    # -- put ---------------------------------------------------------------------------------

    def put(
        self,
        ref_text: str,
        source: Source,
        *,
        path: str | None = None,
        append: bool = False,
        progress: Progress | None = None,
        system: bool = False,
    ) -> Commit:
        """Store ``source`` at the reference's path; a local directory is put recursively."""
        ref = parse_ref(ref_text, path)
        self.check_writable(ref, system)
        try:
            with self.space():
                return self._put(ref, source, append, progress, system)
        except BaseException:
            if isinstance(source, Stream):
                # Read what is left of an upload, so that the client sending it finishes
                # and reads the answer: left unread, it could wait on a full socket.
                _drain(source.stream)
            raise

    def _put(self, ref: Ref, source: Source, append: bool, progress: Progress | None,
             system: bool) -> Commit:
        if isinstance(source, LocalPath) and source.path.is_dir():
            return self._put_tree(ref, source.path, progress, system)
        if not ref.path:
            raise InvalidArgument("put needs a destination file path, e.g. repo@master:/file")
        spool = None
        if append and isinstance(source, Stream | Url):
            # A raced append starts again and reads its source again, but a stream can be
            # read only once: keep its bytes in a temporary file that each attempt rereads.
            spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
            _copy(_readable(source), spool)
            source = Stream(spool)
        try:
            for _attempt in range(10):
                if spool is not None:
                    spool.seek(0)
                done = self._put_file(ref, source, append, system, progress)
                if done is not None:
                    if progress:
                        progress(Counts(files=1, bytes=done[1]))
                    return done[0]
        finally:
            if spool is not None:
                spool.close()
        raise SourceError(f"{ref.path} kept changing while appending to it")

    def _put_file(
        self, ref: Ref, source: Source, append: bool, system: bool,
        progress: Progress | None = None,
    ) -> tuple[Commit, int] | None:
        """One attempt at a single-file put: the commit and the file's size, or None when an
        append raced another writer."""
        batch = WriteBatch()
        with self.leaving(batch):
            return self._put_batch(ref, source, append, system, batch, progress)

    def _put_batch(
        self, ref: Ref, source: Source, append: bool, system: bool, batch: WriteBatch,
        progress: Progress | None,
    ) -> tuple[Commit, int] | None:
        if progress is not None and not append:
            batch.progress = _every(0.1, lambda n: progress(Counts(files=0, bytes=n)))
        base = self._current_entry(ref) if append else None
        content = self._ingest(batch, source, base)
        mode = 0o644
        if isinstance(source, LocalPath) and os.stat(source.path).st_mode & 0o111:
            mode = 0o755

        def build(txn: lmdb.Transaction, commit: Commit) -> dict[str, Change]:
            current = self.store.trees.lookup(txn, bytes.fromhex(commit.root), ref.path)
            if current is not None and current.kind == KIND_DIR:
                raise IsADirectory(f"{ref.path} is a directory")
            if append and _ref_of(current) != _ref_of(base):
                raise _Retry
            return {ref.path: Entry(KIND_FILE, content.size, mode, time.time_ns(),
                                    content.digest)}

        try:
            return self.write(ref, build, batch, system=system), content.size
        except _Retry:
            return None

    def _current_entry(self, ref: Ref) -> Entry | None:
        with self.meta.read() as txn:
            branch = self.records.find_branch(txn, ref.repo, ref.branch_or_id)
            if branch is not None and branch.open is None and branch.head is None:
                return None
            try:
                commit = self.records.resolve(txn, ref)
            except NotFound:
                return None
            return self.store.trees.lookup(txn, bytes.fromhex(commit.root), ref.path)

    def _ingest(self, batch: WriteBatch, source: Source, base: Entry | None) -> Content:
        contents = self.store.contents
        if base is not None and base.kind == KIND_FILE:
            with self.meta.read() as txn:
                old = list(contents.iter_range(txn, base.ref))
            if isinstance(source, LocalPath):
                try:
                    with open(source.path, "rb", buffering=0) as f:
                        return contents.write_stream(batch, _Chain(old, f))
                except OSError as e:
                    raise self.read_failed(source.path, e) from None
            return contents.write_stream(batch, _Chain(old, _readable(source)))
        if isinstance(source, Data):
            return contents.write_bytes(batch, source.data)
        if isinstance(source, LocalPath):
            try:
                return contents.write_file(batch, source.path)
            except OSError as e:
                raise self.read_failed(source.path, e) from None
        return contents.write_stream(batch, _readable(source))

    def _put_tree(
        self, ref: Ref, top: Path, progress: Progress | None, system: bool
    ) -> Commit:
        batch = WriteBatch()
        with self.leaving(batch):
            changes = self.ingest_tree(batch, top, f"{ref.path}/" if ref.path else "",
                                       progress)
            return self.write(ref, lambda txn, commit: changes, batch, system=system)

    def ingest_tree(
        self, batch: WriteBatch, top: Path, prefix: str = "", progress: Progress | None = None
    ) -> dict[str, Change]:
        """Store every file below local ``top``; returns the path changes that place them.

        The walk only lists names (``scandir`` types, no ``stat``); files are read, chunked,
        named and compressed in batches of consecutive files by reader processes, and each
        batch costs this thread one index lookup transaction and one pack write. Files too
        big for a batch are stored here, pipelined. Empty directories and symlinks are kept.
        """
        with self.space():
            return self._ingest_tree(batch, top, prefix, progress)

    def _ingest_tree(
        self, batch: WriteBatch, top: Path, prefix: str, progress: Progress | None
    ) -> dict[str, Change]:
        changes: dict[str, Change] = {}
        files: list[tuple[str, str]] = []
        _list_tree(str(top), prefix, changes, files)
        counts = Counts()
        now = time.time_ns()
        # Each report is a round trip to the event loop: at most one every 0.1 s.
        report = _every(0.1, progress) if progress else None
        contents = self.store.contents
        batches = [files[i : i + _BATCH] for i in range(0, len(files), _BATCH)]
        results = self.store.readers.map(([full for _, full in b] for b in batches),
                                         parallel=len(files) >= POOL_MIN)
        for group, found in zip(batches, results, strict=True):
            ready = [r for r in found if isinstance(r, Prepared)]
            stored = iter(contents.write_prepared(batch, ready))
            for (dest, full), result in zip(group, found, strict=True):
                if isinstance(result, Prepared):
                    content, mode = next(stored), result.mode
                elif isinstance(result, Large):
                    content, mode = self._store_large(batch, full)
                elif isinstance(result, Failed):
                    raise SourceError(result.message)
                else:
                    continue
                changes[dest] = Entry(KIND_FILE, content.size, mode, now, content.digest)
                counts.files += 1
                counts.bytes += content.size
            if report:
                report(Counts(files=counts.files, bytes=counts.bytes))
        if progress:
            progress(counts)
        return changes

    def _store_large(self, batch: WriteBatch, full: str) -> tuple[Content, int]:
        try:
            with open(full, "rb", buffering=0) as f:
                mode = 0o755 if os.fstat(f.fileno()).st_mode & 0o111 else 0o644
                return self.store.contents.write_fd(batch, f.fileno()), mode
        except OSError as e:
            raise self.read_failed(full, e) from None

    # -- failures while storing --------------------------------------------------------------

    @contextmanager
    def space(self) -> Iterator[None]:
        """Running out of space while storing is said as what it is: the store's disk is
        full (not "internal error", and never blamed on the source)."""
        try:
            yield
        except OSError as e:
            if e.errno in _FULL:
                raise StoreFull.under(self.store.root) from None
            raise

    def read_failed(self, path: object, e: OSError) -> PfsError:
        """The error for an ``OSError`` while a source was read and stored: reading fails
        with the source's own errors, appending to a pack with the store's."""
        if e.errno in _FULL:
            return StoreFull.under(self.store.root)
        return SourceError(f"cannot read {path}: {e.strerror}")

    @contextmanager
    def leaving(self, batch: WriteBatch) -> Iterator[None]:
        """A write that failed leaves the store's write gate at once (gc waits for every
        batch inside), and its appended chunks are garbage that gc reclaims."""
        try:
            yield
        finally:
            self.store.packs.gate.leave(batch.chunks)

    # -- reading -----------------------------------------------------------------------------

    def _entry(self, txn: lmdb.Transaction, ref: Ref) -> tuple[Commit, Entry]:
        commit = self.records.resolve(txn, ref)
        entry = self.store.trees.lookup(txn, bytes.fromhex(commit.root), ref.path)
        if entry is None:
            raise NotFound(f"file {ref.path} not found in {ref.repo}@{commit.id}")
        return commit, entry

    def inspect(self, ref_text: str, path: str | None = None) -> FileInfo:
        ref = parse_ref(ref_text, path)
        with self.meta.read() as txn:
            commit, entry = self._entry(txn, ref)
        return info(ref.path, entry, commit.id)

    def open(self, ref_text: str, path: str | None = None) -> tuple[Commit, Entry]:
        """The commit and file entry a reference names; directories are refused."""
        ref = parse_ref(ref_text, path)
        try:
            with self.meta.read() as txn:
                commit, entry = self._entry(txn, ref)
        except (*_DAMAGED, ValueError) as e:  # a record or page that does not decode
            raise Corrupt(f"cannot read {ref_text}: its metadata is damaged ({e})") from None
        if entry.kind == KIND_DIR:
            raise IsADirectory(f"{ref.path or '/'} is a directory (use -r)")
        return commit, entry

    def read(self, entry: Entry, offset: int = 0, size: int | None = None, where: str = ""
             ) -> Iterator[bytes]:
        """A file's bytes, chunk by chunk, each checked against its BLAKE3 name before it
        leaves; symlinks read as their target. An error names ``where`` (the path and
        commit, from ``describe``), since the store only knows chunks."""
        if offset < 0 or (size is not None and size < 0):
            raise InvalidArgument(f"offset {offset} and size {size} must not be negative")
        if entry.kind == KIND_LINK:
            yield entry.ref[offset : None if size is None else offset + size]
            return
        try:
            for piece in self.store.contents.read_range(entry.ref, offset, size):
                yield piece if isinstance(piece, bytes) else bytes(piece)
        except PfsError as e:
            raise _placed(e, where) from None
        except _DAMAGED as e:
            raise _placed(Corrupt(f"its metadata is damaged ({e})"), where) from None

    def copy_to(self, entry: Entry, fd: int, where: str = "") -> int:
        """Write a file's checked bytes into local ``fd`` (see ``ContentStore.copy_to``)."""
        if entry.kind == KIND_LINK:
            return os.write(fd, entry.ref)
        try:
            return self.store.contents.copy_to(entry.ref, fd)
        except PfsError as e:
            raise _placed(e, where) from None
        except _DAMAGED as e:
            raise _placed(Corrupt(f"its metadata is damaged ({e})"), where) from None

    @staticmethod
    def describe(commit: Commit, path: str) -> str:
        """How errors name a file: its path and the commit it was read from."""
        return f"/{path.lstrip('/')} in {commit.repo}@{commit.id}"

    def list(
        self, ref_text: str, path: str | None = None, after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[FileInfo]:
        """A directory's entries in name order (or the file itself), streamed."""
        ref = parse_ref(ref_text, path)
        with self.meta.read() as txn:
            commit, entry = self._entry(txn, ref)
            if entry.kind != KIND_DIR:
                yield info(ref.path, entry, commit.id)
                return
            base = f"{ref.path}/" if ref.path else ""
            for n, (name, child) in enumerate(self.store.trees.listdir(txn, entry.ref, after)):
                if limit is not None and n >= limit:
                    break
                yield info(base + name, child, commit.id)

    def walk(
        self, ref_text: str, path: str | None = None, dirs: bool = False
    ) -> Iterator[FileInfo]:
        """Every file and link (and with ``dirs``, directory) below a path (or the file
        itself), depth first."""
        ref = parse_ref(ref_text, path)
        with self.meta.read() as txn:
            commit, entry = self._entry(txn, ref)
            if entry.kind != KIND_DIR:
                yield info(ref.path, entry, commit.id)
                return
            base = f"{ref.path}/" if ref.path else ""
            for p, e in self.store.trees.walk(txn, entry.ref, base, dirs):
                yield info(p, e, commit.id)

    def glob(self, ref_text: str, pattern: str | Glob) -> Iterator[FileInfo]:
        """Entries matching a glob in Pachyderm's syntax (``pfsmount.pfs.glob``; a leading
        ``/`` is implied). The levels a match can be at are walked, the pattern decides."""
        ref = parse_ref(ref_text)
        if isinstance(pattern, str):
            pattern = compile_glob("/" + pattern.lstrip("/"), "invalid glob")
        parts = [p for p in pattern.scan.split("/") if p]
        with self.meta.read() as txn:
            commit = self.records.resolve(txn, ref)
            root = bytes.fromhex(commit.root)
            if not parts:
                yield info("", self.store.trees.lookup(txn, root, "") or _EMPTY_DIR, commit.id)
                return
            seen: set[str] = set()
            for p, e in self._walk_levels(txn, root, parts, ""):
                if p not in seen and pattern.match("/" + p) is not None:
                    seen.add(p)
                    yield info(p, e, commit.id)

    def _walk_levels(
        self, txn: lmdb.Transaction, directory: bytes, parts: builtins.list[str], prefix: str
    ) -> Iterator[tuple[str, Entry]]:
        """The entries at the levels ``parts`` name: a name is looked up, ``*`` lists a
        directory, ``**`` any number of levels (``Glob.scan``)."""
        trees = self.store.trees
        head, rest = parts[0], parts[1:]
        if head == "**":
            if rest:
                yield from self._walk_levels(txn, directory, rest, prefix)
            for name, entry in trees.listdir(txn, directory):
                if not rest:
                    yield prefix + name, entry
                if entry.kind == KIND_DIR:
                    yield from self._walk_levels(txn, entry.ref, parts, f"{prefix}{name}/")
            return
        if head != "*":
            found = trees.find(txn, directory, head)
            matches = [] if found is None else [(head, found)]
        else:
            matches = list(trees.listdir(txn, directory))
        for name, entry in matches:
            if not rest:
                yield prefix + name, entry
            elif entry.kind == KIND_DIR:
                yield from self._walk_levels(txn, entry.ref, rest, f"{prefix}{name}/")

    def diff(self, new_ref: str, old_ref: str | None = None) -> builtins.list[FileDiff]:
        """What changed from ``old_ref`` (default: the new commit's parent) to ``new_ref``."""
        new = parse_ref(new_ref)
        with self.meta.read() as txn:
            new_commit = self.records.resolve(txn, new)
            if old_ref is None:
                old_root = (
                    bytes.fromhex(self.records.commit(txn, new_commit.parent).root)
                    if new_commit.parent else self.store.trees.empty
                )
            else:
                old_root = bytes.fromhex(self.records.resolve(txn, parse_ref(old_ref)).root)
            out = []
            for p, a, b in self.store.trees.diff(txn, old_root, bytes.fromhex(new_commit.root)):
                change = "added" if a is None else "removed" if b is None else "modified"
                out.append(FileDiff(
                    path="/" + p, change=change,  # type: ignore[arg-type]
                    old=info(p, a) if a else None, new=info(p, b) if b else None,
                ))
        return out

    # -- other writes ------------------------------------------------------------------------

    def delete(
        self, ref_text: str, path: str | None = None, recursive: bool = False,
        system: bool = False,
    ) -> Commit:
        ref = parse_ref(ref_text, path)
        if not ref.path:
            raise InvalidArgument("delete needs a path; to empty a repo delete its files with -r /")

        def build(txn: lmdb.Transaction, commit: Commit) -> dict[str, Change]:
            entry = self.store.trees.lookup(txn, bytes.fromhex(commit.root), ref.path)
            if entry is None:
                raise NotFound(f"file {ref.path} not found in {ref.repo}@{commit.id}")
            if entry.kind == KIND_DIR and not recursive and self.store.trees.count(txn, entry.ref):
                raise DirectoryNotEmpty(f"{ref.path} is a non-empty directory (use -r)")
            return {ref.path: None}

        self.check_writable(ref, system)
        return self.write(ref, build, system=system)

    def copy(self, src_text: str, dst_text: str, system: bool = False) -> Commit:
        """Copy a file or a whole directory: an entry copy, no data is read or written."""
        src, dst = parse_ref(src_text), parse_ref(dst_text)
        with self.meta.read() as txn:
            _, entry = self._entry(txn, src)
        dest = dst.path or src.path.rsplit("/", 1)[-1]
        if not dest:
            raise InvalidArgument("copy needs a destination path")
        return self.write(dst, lambda txn, commit: {dest: entry}, system=system)

    def apply(self, ref_text: str, changes: dict[str, Change], system: bool = False,
              batch: WriteBatch | None = None, finish: bool | None = None) -> Commit:
        """Apply prepared path changes (used by the mount and the scheduler)."""
        ref = parse_ref(ref_text)
        normalized = {normalize_path(p): c for p, c in changes.items()}
        if "" in normalized:
            raise InvalidArgument("cannot replace the repo root")
        return self.write(ref, lambda txn, commit: normalized, batch, system=system,
                          finish=finish)


def _every(seconds: float, fn: Callable[[_T], None]) -> Callable[[_T], None]:
    """``fn``, called at most once every ``seconds`` (progress reports)."""
    last = time.monotonic()

    def call(value: _T) -> None:
        nonlocal last
        now = time.monotonic()
        if now >= last + seconds:
            last = now
            fn(value)

    return call


# What LMDB and the record decoders raise on damaged metadata: a read turns it into Corrupt.
_DAMAGED = (lmdb.Error, msgspec.ValidationError, msgspec.DecodeError)


def _placed(err: PfsError, where: str) -> PfsError:
    """``err`` with the file it happened in put first (same class: same exit code)."""
    if not where:
        return err
    return type(err)(f"cannot read {where}: {err.message}")


class _Retry(Exception):
    """The file an append read changed before the append landed: read it again."""


_EMPTY_DIR = Entry(KIND_DIR, 0, 0o755, 0, b"")


def _ref_of(entry: Entry | None) -> bytes | None:
    return None if entry is None else entry.ref


def _list_tree(top: str, prefix: str, changes: dict[str, Change],
               files: builtins.list[tuple[str, str]]) -> None:
    """Names below ``top`` in sorted order: regular files into ``files`` as (destination,
    local path), symlinks and empty directories straight into ``changes``."""
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise SourceError(f"cannot read {err.filename}: {err.strerror}") from None
    if not entries and prefix:
        changes[prefix.rstrip("/")] = MKDIR
    for e in entries:
        try:
            check_component(e.name)
        except InvalidArgument as err:  # refused whole, as the mount refuses such a name
            raise type(err)(f"cannot put {shown(e.path)}: {err.message.partition(': ')[2]}"
                            ) from None
        try:
            if e.is_symlink():
                target = os.readlink(e.path).encode(errors="surrogateescape")
                changes[prefix + e.name] = Entry(KIND_LINK, len(target), 0o777,
                                                 time.time_ns(), target)
            elif e.is_dir(follow_symlinks=False):
                _list_tree(e.path, f"{prefix}{e.name}/", changes, files)
            elif e.is_file(follow_symlinks=False):
                files.append((prefix + e.name, e.path))
        except OSError as err:
            raise SourceError(f"cannot read {e.path}: {err.strerror}") from None


def _copy(src: Readable, dst: BinaryIO) -> None:
    buf = memoryview(bytearray(1 << 20))
    while n := src.readinto(buf) or 0:
        dst.write(buf[:n])


def _drain(src: Readable) -> None:
    buf = memoryview(bytearray(1 << 20))
    with contextlib.suppress(Exception):
        while src.readinto(buf):
            pass


def _readable(source: Source) -> Readable:
    if isinstance(source, Stream):
        return source.stream
    if isinstance(source, Data):
        return io.BytesIO(source.data)
    if isinstance(source, LocalPath):
        raise AssertionError("local files are read by path, not as a stream")
    return _fetch(source.url)


def _fetch(url: str) -> Readable:
    """Stream an http(s) URL; any failure, now or mid-body, is a ``SourceError``."""
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"unsupported URL {url!r}: only http and https")
    import httpx  # only URL puts need it (tens of ms to import)

    client = httpx.Client(follow_redirects=True, timeout=30.0)
    try:
        response = client.send(client.build_request("GET", url), stream=True)
    except httpx.HTTPError as e:
        client.close()
        raise SourceError(f"cannot fetch {url}: {e}") from None
    if response.status_code >= 400:
        response.close()
        client.close()
        raise SourceError(f"cannot fetch {url}: HTTP {response.status_code}")

    def body() -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(1 << 20)
        except httpx.HTTPError as e:
            raise SourceError(f"cannot fetch {url}: {e}") from None
        finally:
            response.close()
            client.close()

    return _Chain(body())
