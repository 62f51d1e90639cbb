"""Sweeping the store's own structures: the garbage rows of ``nodes``, ``contents`` and
``chunks``, the pack objects no row points into, and the packs mostly garbage.

``sweep`` runs in the caller's transaction (a write transaction, or a read one for a dry
run), given what is live: the tree pages and file contents the layers above still reach.
Pack objects are deleted only by ``delete_packs``, after that transaction commits (a crash
in between leaves packs with no rows, which the next sweep finds). A pack's garbage is its
size less the bytes its live rows cover, so bytes that a failed write appended and never
indexed count too. The caller holds the write gate (see ``gate``); nothing here knows about
commits, repos or why something is live.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple, cast

import lmdb
import msgspec

from pfsmount.store.rows import Location, pack_name, pack_number

if TYPE_CHECKING:
    from pfsmount.store import Store

SPARSE = 0.5  # a pack at least this much garbage is emptied into a new one


class SweepCounts(msgspec.Struct, kw_only=True):
    """What a sweep found (and, unless a dry run, deleted from the index).

    ``pages``, ``contents`` and ``chunks`` count garbage rows; ``packs`` the pack objects no
    row points into and ``freed`` their bytes. The ``compacted`` packs that are at least
    ``SPARSE`` garbage have their live chunks (``moved`` bytes) copied to a new pack, and go
    (``freed_next`` bytes) at the next sweep; ``packs_kept`` packs keep ``garbage_kept``
    bytes of garbage because they hold enough live data to stay as they are.
    """

    pages: int = 0
    contents: int = 0
    chunks: int = 0
    packs: int = 0
    freed: int = 0
    packs_kept: int = 0
    garbage_kept: int = 0
    compacted: int = 0
    moved: int = 0
    freed_next: int = 0


class Sweep(NamedTuple):
    """What is left to do once the sweep's transaction committed: the ``dead`` packs to
    delete (``delete_packs``) and the live chunks ``moving`` out of sparse packs
    (``PackStore.move``)."""

    dead: set[int]
    moving: list[tuple[bytes, Location]]


def sweep(store: Store, txn: lmdb.Transaction, pages: set[bytes], contents: set[bytes],
          delete: bool, found: SweepCounts) -> Sweep:
    """Count in ``found`` (and with ``delete``, drop) every row not live; find the dead and
    sparse packs. ``pages`` gains the empty page."""
    db = store.meta.db
    pages.add(store.trees.empty)  # always live: every new tree starts from it
    found.pages = _drop(txn, db["nodes"], pages, delete)
    chunks, dead_contents = store.contents.sweep(txn, contents)
    found.contents = len(dead_contents)
    if delete:
        for key in dead_contents:
            txn.delete(key, db=db["contents"])
    live_bytes: dict[int, int] = {}  # pack -> bytes its live rows cover
    dead_chunks: list[bytes] = []
    for key, value in cast(Iterator[tuple[bytes, bytes]], txn.cursor(db=db["chunks"])):
        if key in chunks:
            loc = Location.decode(value)
            live_bytes[loc.pack] = live_bytes.get(loc.pack, 0) + loc.stored
        else:
            dead_chunks.append(key)
    found.chunks = len(dead_chunks)
    if delete:
        for key in dead_chunks:
            txn.delete(key, db=db["chunks"])
    staged = store.packs.staged()
    sealed = {p for p in map(pack_number, store.objects.list()) if p is not None}
    dead = sealed - set(live_bytes) - staged
    found.packs = len(dead)
    found.freed = sum(_size(store, p) for p in dead)
    # Garbage: whatever part of a pack no live row covers, indexed or not (a failed write's
    # chunks were appended, never indexed).
    garbage: dict[int, int] = {}
    for pack in (sealed & set(live_bytes)) - staged:
        extra = _size(store, pack) - live_bytes[pack]
        if extra > 0:
            garbage[pack] = extra
    sparse, moving = _compact(store, txn, found, chunks, garbage)
    found.packs_kept = len(set(garbage) - sparse)
    found.garbage_kept = sum(n for p, n in garbage.items() if p not in sparse)
    return Sweep(dead, moving)


def delete_packs(store: Store, packs: set[int]) -> None:
    """Delete these pack objects (``Sweep.dead``), once the sweep's transaction committed."""
    for pack in sorted(packs):
        store.objects.delete(pack_name(pack))


def _size(store: Store, pack: int) -> int:
    return store.objects.size(pack_name(pack)) or 0


def _compact(store: Store, txn: lmdb.Transaction, found: SweepCounts, chunks: set[bytes],
             garbage: dict[int, int]) -> tuple[set[int], list[tuple[bytes, Location]]]:
    """The packs that are at least ``SPARSE`` garbage, and their live ``chunks`` to move
    (``PackStore.move``), in pack order."""
    if not garbage:
        return set(), []
    live: dict[int, list[tuple[bytes, Location]]] = {p: [] for p in garbage}
    for key, value in cast(Iterator[tuple[bytes, bytes]], txn.cursor(db=store.meta.db["chunks"])):
        rows = live.get(Location.pack_of(value))
        if rows is not None and key in chunks:  # a dry run still sees the garbage rows
            rows.append((key, Location.decode(value)))
    sparse = {p for p, rows in live.items()
              if garbage[p] >= SPARSE * (garbage[p] + sum(loc.stored for _, loc in rows))}
    found.compacted = len(sparse)
    found.freed_next = sum(_size(store, p) for p in sparse)
    moving = sorted((row for p in sparse for row in live[p]), key=lambda r: r[1][:2])
    found.moved = sum(loc.stored for _, loc in moving)  # a dry run's answer
    return sparse, moving


def _drop(txn: lmdb.Transaction, db: lmdb._Database, live: set[bytes], delete: bool) -> int:
    dead = [key for key in txn.cursor(db=db).iternext(values=False) if key not in live]
    if delete:
        for key in dead:
            txn.delete(key, db=db)
    return len(dead)
