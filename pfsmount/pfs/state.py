"""State that the layers above the model keep beside it, and the model writes it lands with.

Owns the access to the *state tables* that ``store.meta`` lists for the layers above (the
scheduler's ``pipelines``, ``jobs`` and ``datums``): named tables of records whose encoding
belongs to their owner, read and written inside a ``Scope`` (an open transaction, opaque
above ``pfs``). It also offers the model operations that must share a scope with such a
record: storing a local tree (a datum's ``/pfs/out``) as ``Staged`` content, and landing
staged content together with records in one transaction. It re-exports the model values the
layers above keep in their records (``Entry`` and its kinds), so that nothing above ``pfs``
imports the store. It never decodes a record nor decides what one means; the owners check
their own tables through ``checks``, which ``pfs.fsck`` runs, and drop the rows that name
content ``fsck --repair`` dropped through ``repairs``, which ``pfs.repair`` runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from pfsmount.pfs.records import Records
from pfsmount.store import KIND_DIR, KIND_FILE, KIND_LINK, Entry, Store, WriteBatch
from pfsmount.store.meta import STATE_TABLES
from pfsmount.store.tree import Change

__all__ = ["KIND_DIR", "KIND_FILE", "KIND_LINK", "Change", "Entry", "Scope", "Staged",
           "State", "Table"]

_MAX_KEY = 511  # bytes in an LMDB key


class Scope:
    """One open read or write transaction of the model's metadata. Obtained from
    ``State.read``/``State.write`` (or handed to a callback of a model write) and valid only
    inside that block."""

    __slots__ = ("_txn",)

    def __init__(self, txn: lmdb.Transaction) -> None:
        self._txn = txn


class Table:
    """One state table: byte keys to encoded records (the owner encodes them)."""

    def __init__(self, name: str, db: lmdb._Database) -> None:
        self.name = name
        self._db = db

    def get(self, scope: Scope, key: bytes) -> bytes | memoryview | None:
        """The row under ``key``; a key the table cannot hold (empty, too long) is no row."""
        return scope._txn.get(key, db=self._db) if 0 < len(key) <= _MAX_KEY else None

    def put(self, scope: Scope, key: bytes, value: bytes) -> None:
        scope._txn.put(key, value, db=self._db)

    def delete(self, scope: Scope, key: bytes) -> None:
        scope._txn.delete(key, db=self._db)

    def delete_prefix(self, scope: Scope, prefix: bytes) -> None:
        cur = scope._txn.cursor(db=self._db)
        if cur.set_range(prefix):
            while bytes(cur.key()).startswith(prefix):
                if not cur.delete():
                    break

    def items(self, scope: Scope) -> Iterator[tuple[bytes, bytes | memoryview]]:
        for key, raw in scope._txn.cursor(db=self._db):
            yield bytes(key), raw


class Staged:
    """Content stored (in packs) for a write that has not landed: the layer above holds it
    until ``State.land`` indexes it with its records. Dropped unlanded, it is garbage that
    ``gc`` reclaims."""

    __slots__ = ("batch",)

    def __init__(self) -> None:
        self.batch = WriteBatch()

    @property
    def empty(self) -> bool:
        """Whether nothing is left to land (nothing was stored, or it landed)."""
        return not self.batch.contents


Check = Callable[[Scope], Iterable[str]]
# Given the content digests ``fsck --repair`` dropped, delete the owner's rows that name them
# (or name content already gone); one ``lost`` line for each row deleted.
Repair = Callable[[Scope, set[bytes]], list[str]]


class State:
    """The state tables and the model operations that share a scope with them. ``ingest``
    stores a local tree into a batch (``Files.ingest_tree``); ``gc_roots`` is the model's
    list of live-entry providers, which ``keep`` adds to."""

    def __init__(self, store: Store, records: Records, ingest: Callable[
            [WriteBatch, Path], dict[str, Change]],
            gc_roots: list[Callable[[lmdb.Transaction], Iterable[Entry]]]) -> None:
        self._store = store
        self._meta = store.meta
        self._records = records
        self._ingest = ingest
        self._gc_roots = gc_roots
        # Each owner's consistency check of its tables: one line per problem (``fsck``).
        self.checks: list[Check] = []
        # Each owner's repair of its tables, in ``fsck --repair``'s write transaction.
        self.repairs: list[Repair] = []

    def table(self, name: str) -> Table:
        if name not in STATE_TABLES:
            raise KeyError(f"{name} is not a state table (store.meta.STATE_TABLES)")
        return Table(name, self._meta.db[name])

    @contextmanager
    def read(self) -> Iterator[Scope]:
        with self._meta.read() as txn:
            yield Scope(txn)

    @contextmanager
    def write(self) -> Iterator[Scope]:
        """A write scope: committed when the block ends, aborted if it raises."""
        with self._meta.write() as txn:
            yield Scope(txn)

    def keep(self, provider: Callable[[Scope], Iterable[Entry]]) -> None:
        """Register entries that are live though no commit holds them (``gc`` keeps them)."""
        self._gc_roots.append(lambda txn: provider(Scope(txn)))

    def check(self, txn: lmdb.Transaction) -> Iterator[str]:
        """Every registered check's problems, in ``fsck``'s read transaction."""
        scope = Scope(txn)
        for check in self.checks:
            yield from check(scope)

    def repair(self, txn: lmdb.Transaction, dropped: set[bytes]) -> list[str]:
        """Every registered repair's ``lost`` lines, in ``fsck --repair``'s write
        transaction, after the content digests ``dropped`` lost their rows."""
        scope = Scope(txn)
        return [line for repair in self.repairs for line in repair(scope, dropped)]

    # -- model lookups inside a scope --------------------------------------------------------

    def branch_head(self, scope: Scope, repo: str, branch: str) -> str | None:
        """The head commit of ``repo@branch``; None when there is no such branch or head."""
        found = self._records.find_branch(scope._txn, repo, branch)
        return None if found is None else found.head

    def repo_kind(self, scope: Scope, repo: str) -> str | None:
        """The kind of repo ``repo`` ("user", "pipeline"); None when it does not exist."""
        if not self._records.has_repo(scope._txn, repo):
            return None
        return self._records.repo(scope._txn, repo).kind

    def has_content(self, scope: Scope, entry: Entry) -> bool:
        """Whether a file entry's content is indexed (links and directories: always)."""
        return entry.kind != KIND_FILE or \
            scope._txn.get(entry.ref, db=self._meta.db["contents"]) is not None

    # -- content that lands with records -----------------------------------------------------

    def stage_tree(self, top: Path) -> tuple[list[tuple[str, Entry]], Staged]:
        """Store every file and link below local ``top``: each one's path and entry (in
        path order; directories are implied), and the staged content they need."""
        staged = Staged()
        changes = self._ingest(staged.batch, top)
        return sorted((p, e) for p, e in changes.items()
                      if isinstance(e, Entry) and e.kind != KIND_DIR), staged

    def stage_bytes(self, staged: Staged, data: bytes, mode: int) -> Entry:
        """Store ``data`` as a file's content in ``staged``; the entry naming it."""
        content = self._store.contents.write_bytes(staged.batch, data)
        return Entry(KIND_FILE, content.size, mode, time.time_ns(), content.digest)

    def land(self, staged: Iterable[Staged], record: Callable[[Scope], None] | None = None,
             durable: bool = True) -> None:
        """Index staged content and write ``record``'s rows in one transaction, so a record
        never names content that did not land. ``durable`` False leaves syncing the packs
        to the next durable write (a commit finish syncs them before it points at them)."""
        with self._meta.write() as txn:
            for s in staged:
                self._store.contents.commit(s.batch, txn, durable=durable)
            if record is not None:
                record(Scope(txn))
