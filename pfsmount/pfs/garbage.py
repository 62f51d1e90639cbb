"""``gc``: remove the tree pages, contents, chunks and packs that nothing reaches any more.

Live is what any commit of any repo reaches (open commits too) and what the registered root
providers name (the scheduler's remembered datum outputs, which later jobs reuse). Deleting a
repo or a commit only drops references; this is where their bytes come back.

Safety rests on three things. The store's write gate is closed first, so no write is between
reusing a chunk and referencing it (see ``store.gate``); then the staging journal is flushed,
so files closed in the mount are indexed; then marking and sweeping happen in one LMDB write
transaction, so no reference can appear between the two. Pack objects go only after that
transaction commits, and only those no chunk row points into: a crash in between leaves
packs with no rows, which the next collection deletes. A pack's garbage is its size less
the bytes its live rows cover, so bytes that a failed write appended and never indexed count
too. A pack that is mostly garbage has its live chunks copied to a new pack in a second
transaction, after the dead packs are gone (on a full disk that space is what the copy
needs; if it still does not fit, the collection keeps what it freed and says so), and goes
at the next collection (readers that looked its chunks up before may still be reading it);
other packs with some garbage stay as they are. Nothing here knows about HTTP, FUSE or
pipelines.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator
from typing import cast

import lmdb

from pfsmount.errors import StoreFull
from pfsmount.pfs import Pfs
from pfsmount.pfs.model import GcReport
from pfsmount.store import KIND_FILE, Entry
from pfsmount.store.packs import Location, pack_name

SPARSE = 0.5  # a pack at least this much garbage is emptied into a new one
log = logging.getLogger("pfsmount.gc")


def collect(pfs: Pfs, dry_run: bool = False, wait: float = 30.0) -> GcReport:
    """Collect garbage; waits up to ``wait`` seconds for writes in progress to finish."""
    started = time.monotonic()
    store = pfs.store
    report = GcReport(dry_run=dry_run)
    with store.packs.gate.closed(wait):
        pfs.journal.flush()
        store.packs.seal()  # every chunk in it is indexed or garbage now: it may go whole
        with (store.meta.read() if dry_run else store.meta.write()) as txn:
            dead, moving = _sweep(pfs, txn, report, delete=not dry_run)
        if not dry_run:
            for pack in sorted(dead):
                store.objects.delete(pack_name(pack))
            if moving:
                _move(pfs, moving, report)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _mark(pfs: Pfs, txn: lmdb.Transaction) -> tuple[set[bytes], set[bytes]]:
    """The live tree pages and file contents."""
    store = pfs.store
    roots = [bytes.fromhex(c.root) for c in pfs.records.commits(txn) if c.root]
    files: list[Entry] = []
    for provider in pfs.gc_roots:
        for entry in provider(txn):
            if entry.is_dir:
                roots.append(entry.ref)
            else:
                files.append(entry)
    pages: set[bytes] = {store.trees.empty}
    files.extend(store.trees.reachable(txn, roots, pages))
    return pages, {e.ref for e in files if e.kind == KIND_FILE}


def _move(pfs: Pfs, moving: list[tuple[bytes, Location]], report: GcReport) -> None:
    """Copy the live chunks of the packs being emptied into the open pack."""
    try:
        with pfs.store.meta.write() as txn:
            report.moved = pfs.store.packs.move(txn, moving)
    except (OSError, StoreFull) as e:
        if isinstance(e, OSError) and e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Too little space even after the dead packs went: those stay freed, the sparse
        # packs stay whole (and readable) for a later collection.
        log.warning("gc: no space to empty %d sparse packs; run gc again once there is",
                    report.compacted)
        report.compacted = report.freed_next = report.moved = 0


def _sweep(pfs: Pfs, txn: lmdb.Transaction, report: GcReport, delete: bool
           ) -> tuple[set[int], list[tuple[bytes, Location]]]:
    """Count (and delete) the garbage rows; the sealed packs no remaining row points into,
    and the live chunks to move out of sparse packs."""
    store = pfs.store
    pages, contents = _mark(pfs, txn)
    db = store.meta.db
    report.pages = _drop(txn, db["nodes"], pages, delete)
    chunks, dead_contents = store.contents.sweep(txn, contents)
    report.contents = len(dead_contents)
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
    live_packs = set(live_bytes)
    report.chunks = len(dead_chunks)
    if delete:
        for key in dead_chunks:
            txn.delete(key, db=db["chunks"])
    staged = store.packs.staged()
    sealed = {int(name.removesuffix(".pack"), 16) for name in store.objects.list()
              if name.endswith(".pack")}
    dead = sealed - live_packs - staged
    for pack in dead:
        report.packs += 1
        report.freed += store.objects.size(pack_name(pack)) or 0
    # Garbage: whatever part of a pack no live row covers, indexed or not (a failed write's
    # chunks were appended, never indexed).
    garbage_by_pack: dict[int, int] = {}
    for pack in (sealed & live_packs) - staged:
        garbage = (store.objects.size(pack_name(pack)) or 0) - live_bytes[pack]
        if garbage > 0:
            garbage_by_pack[pack] = garbage
    sparse, moving = _compact(pfs, txn, report, chunks, garbage_by_pack,
                              set(garbage_by_pack))
    report.packs_kept = len(set(garbage_by_pack) - sparse)
    report.garbage_kept = sum(n for p, n in garbage_by_pack.items() if p not in sparse)
    return dead, moving


def _compact(pfs: Pfs, txn: lmdb.Transaction, report: GcReport, chunks: set[bytes],
             garbage: dict[int, int], candidates: set[int]
             ) -> tuple[set[int], list[tuple[bytes, Location]]]:
    """The packs that are at least ``SPARSE`` garbage, and their live ``chunks`` to move to
    the open pack (``PackStore.move``, in ``_move``)."""
    candidates &= set(garbage)
    if not candidates:
        return set(), []
    live: dict[int, list[tuple[bytes, Location]]] = {p: [] for p in candidates}
    for key, value in cast(Iterator[tuple[bytes, bytes]],
                           txn.cursor(db=pfs.store.meta.db["chunks"])):
        rows = live.get(Location.pack_of(value))
        if rows is not None and key in chunks:  # a dry run still sees the garbage rows
            rows.append((key, Location.decode(value)))
    sparse = {p for p, rows in live.items()
              if garbage[p] >= SPARSE * (garbage[p] + sum(loc.stored for _, loc in rows))}
    for pack in sparse:
        report.compacted += 1
        report.freed_next += pfs.store.objects.size(pack_name(pack)) or 0
    moving = sorted((row for p in sparse for row in live[p]), key=lambda r: r[1][:2])
    report.moved = sum(loc.stored for _, loc in moving)  # a dry run's answer
    return sparse, moving


def _drop(txn: lmdb.Transaction, db: lmdb._Database, live: set[bytes], delete: bool) -> int:
    dead = [key for key in txn.cursor(db=db).iternext(values=False) if key not in live]
    if delete:
        for key in dead:
            txn.delete(key, db=db)
    return len(dead)
