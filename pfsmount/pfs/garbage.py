"""``gc``: remove the tree pages, contents, chunks and packs that nothing reaches any more.

Owns marking: live is what any commit of any repo reaches (open commits too) and what the
registered root providers name (the scheduler's remembered datum outputs, which later jobs
reuse). Deleting a repo or a commit only drops references; this is where their bytes come
back. Sweeping the store's rows and packs is the store's (``store.sweep``): nothing here
knows pack names, row formats or codecs.

Safety rests on three things. The store's write gate is closed first, so no write is between
reusing a chunk and referencing it (see ``store.gate``); then the staging journal is flushed,
so files closed in the mount are indexed; then marking and sweeping happen in one LMDB write
transaction, so no reference can appear between the two. Pack objects go only after that
transaction commits. A pack that is mostly garbage has its live chunks copied to a new pack
in a second transaction, after the dead packs are gone (on a full disk that space is what
the copy needs; if it still does not fit, the collection keeps what it freed and says so),
and goes at the next collection (readers that looked its chunks up before may still be
reading it). Nothing here knows about HTTP, FUSE or pipelines.
"""

from __future__ import annotations

import errno
import logging
import time

import lmdb

from pfsmount.errors import StoreFull
from pfsmount.pfs import Pfs
from pfsmount.pfs.model import GcReport
from pfsmount.store import KIND_FILE, Entry
from pfsmount.store.rows import Location
from pfsmount.store.sweep import delete_packs, sweep

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
            pages, contents = _mark(pfs, txn)
            swept = sweep(store, txn, pages, contents, not dry_run, report)
        if not dry_run:
            delete_packs(store, swept.dead)
            if swept.moving:
                _move(pfs, swept.moving, report)
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
    pages: set[bytes] = set()
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
