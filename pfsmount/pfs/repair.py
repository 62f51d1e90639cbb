"""``fsck --repair``: drop what cannot be saved, keep everything else readable, name each loss.

Owns the one change to stored history that pfsmount ever makes on its own behalf. It acts on
the ``Damage`` a full ``fsck --verify`` finds (chunk index rows and ``contents`` rows that
reads cannot be served from) and nothing else:

- the damaged chunk rows and every ``contents`` row that uses one are deleted, so no file
  can name them any more;
- every commit (open or finished) whose tree holds a file with such content gets that entry
  removed: its root and size are rewritten in place, keeping its id, parent, provenance and
  branch heads, so every other file of every commit reads as before. Each removal is one
  ``lost`` line naming the file and the commit;
- the layers above drop their rows that name such content (``State.repairs``: a datum
  result whose output is gone is forgotten, so the next job runs that datum again), each
  one ``lost`` line.

All of it happens in one LMDB write transaction behind the store's write gate (as ``gc``
does), so a crash leaves the store as it was or fully repaired. Damage of other kinds (tree
pages, commit records) is not repaired: it stays in the report that a final ``fsck``
produces. The damaged bytes themselves stay in their packs until ``gc`` frees them.
"""

from __future__ import annotations

import time
from typing import cast

import lmdb

from pfsmount.errors import Corrupt
from pfsmount.pfs import Pfs
from pfsmount.pfs.events import Event
from pfsmount.pfs.fsck import check
from pfsmount.pfs.model import Commit, FsckReport
from pfsmount.store import KIND_DIR, KIND_FILE
from pfsmount.store.check import drop_damaged
from pfsmount.store.tree import DEPTH_MAX, Change, Trees


def repair(pfs: Pfs, wait: float = 30.0) -> FsckReport:
    """Repair the store under ``pfs`` (see the module docstring); waits up to ``wait``
    seconds for writes in progress. Returns the ``fsck --verify`` report made afterwards,
    with ``lost`` naming every file dropped from every commit."""
    store = pfs.store
    lost: list[str] = []
    changed: list[Commit] = []
    with store.packs.gate.closed(wait):
        pfs.journal.flush()
        store.packs.seal()
        _, damage = check(pfs, verify_data=True)
        with store.meta.write() as txn:
            # Run even with no damage: a row above may name content an earlier repair dropped.
            bad = drop_damaged(store, txn, damage.chunks, damage.contents) \
                if damage.chunks or damage.contents else set()
            if bad:
                known: dict[bytes, bool] = {}  # pages are shared: each is looked at once
                for commit in list(pfs.records.commits(txn)):
                    paths = _damaged_files(store.trees, txn, commit, bad, known)
                    if not paths:
                        continue
                    root, size = store.trees.apply(
                        txn, bytes.fromhex(commit.root), dict.fromkeys(paths, cast(Change, None)),
                        time.time_ns())
                    commit.root, commit.size = root.hex(), size
                    pfs.records.put_commit(txn, commit)
                    changed.append(commit)
                    lost.extend(f"/{p} in {commit.repo}@{commit.id}" for p in paths)
            lost.extend(pfs.state.repair(txn, bad))
    for commit in changed:  # the mount drops what it cached of these trees
        pfs.events.emit(Event("files_changed", commit.repo, commit.branch, commit.id,
                              commit.root),
                        Event("branch_changed", commit.repo, commit.branch, commit.id))
    report = check(pfs, verify_data=True)[0]
    report.lost = lost
    return report


def _damaged_files(trees: Trees, txn: lmdb.Transaction, commit: Commit, bad: set[bytes],
                   known: dict[bytes, bool]) -> list[str]:
    """The paths of files in ``commit`` whose content is in ``bad``; ``known`` (shared by
    every commit) gains what this tree's pages hold. A tree that cannot be read is left
    alone: the final ``fsck`` reports it."""
    try:
        root = bytes.fromhex(commit.root)
        memo = _holding(trees, txn, root, bad, known)
        known.update(memo)  # only a tree read whole: a failed one leaves placeholders
        return _collect(trees, txn, root, bad, known) if known[root] else []
    except (Corrupt, ValueError):
        return []


def _holding(trees: Trees, txn: lmdb.Transaction, top: bytes, bad: set[bytes],
             known: dict[bytes, bool]) -> dict[bytes, bool]:
    """For ``top`` and each directory page below it not in ``known``, whether a file below
    has damaged content. Each page is looked at once, children before parents; a page that
    contains itself (damage) ends there instead of looping."""
    memo: dict[bytes, bool] = {}

    def seen(page: bytes) -> bool | None:
        return memo.get(page, known.get(page))

    stack = [(top, False)]
    while stack:
        directory, children_done = stack.pop()
        if not children_done:
            if seen(directory) is not None:
                continue
            memo[directory] = False  # until its children are done
            stack.append((directory, True))
            stack.extend((e.ref, False) for _, e in trees.listdir(txn, directory)
                         if e.kind == KIND_DIR and seen(e.ref) is None)
            continue
        memo[directory] = any(
            (e.kind == KIND_FILE and e.ref in bad) or (e.kind == KIND_DIR and seen(e.ref))
            for _, e in trees.listdir(txn, directory))
    return memo


def _collect(trees: Trees, txn: lmdb.Transaction, top: bytes, bad: set[bytes],
             memo: dict[bytes, bool]) -> list[str]:
    """The paths below ``top`` of files with damaged content, entering only directories
    that hold some; nesting past ``DEPTH_MAX`` is damage (a page that contains itself)."""
    out: list[str] = []
    stack = [(top, "", 0)]
    while stack:
        directory, prefix, depth = stack.pop()
        if depth > DEPTH_MAX:
            raise Corrupt(f"directories nest deeper than {DEPTH_MAX}")
        for name, entry in trees.listdir(txn, directory):
            if entry.kind == KIND_FILE and entry.ref in bad:
                out.append(prefix + name)
            elif entry.kind == KIND_DIR and memo.get(entry.ref):
                stack.append((entry.ref, f"{prefix}{name}/", depth + 1))
    return out
