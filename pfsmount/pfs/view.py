"""The view model of the mount: what ``/pfs/<repo>/<branch-or-commit-id>/...`` shows.

``Views`` answers, in plain values, what the FUSE adapter needs to show a directory tree:
the repo names, a repo's branch names, what a ``<repo>/<name>`` view is (a branch's open
commit, else its head, writable for input repos; or a commit id, read-only), the entry at a
path of a view with the write overlay's staged files and directories layered on, listings,
the changes the mount itself makes, and what the kernel must forget when the model changes
(``stale``). Lookups in a finished commit are dictionary hits once warm: trees never change,
so entries are remembered by (tree, path), and views until the model changes.

It owns no inodes, handles or errnos (that is ``fuse/``), and no open files (``overlay``).
Its caches belong to the mount's trio thread; ``model_changed`` may come from any thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import trio

from pfsmount.errors import NotFound, PfsError
from pfsmount.pfs.events import Event
from pfsmount.pfs.model import Commit
from pfsmount.pfs.overlay import Key, Overlay
from pfsmount.pfs.prefetch import Prefetcher
from pfsmount.pfs.refs import is_commit_id
from pfsmount.pfs.system import Pfs
from pfsmount.store import KIND_DIR, KIND_FILE, KIND_LINK, MKDIR, Entry, WriteBatch
from pfsmount.store.tree import Change, Retouch, Trees

# The tree entry is the view's node value as it is: a plain immutable struct (kind, size,
# mode, mtime, ref), handed up without a copy per lookup.
__all__ = ["KIND_DIR", "KIND_FILE", "KIND_LINK", "MKDIR", "Change", "Entry", "Key", "Retouch",
           "Stale", "View", "Views", "WriteBatch"]

ENTRY_CACHE = 65536  # tree entries remembered (see ``tree_entry``)
ROOT: Key = ("", None, "")  # the key of ``/pfs`` itself


@dataclass(frozen=True)
class View:
    """What a ``/pfs/<repo>/<view>`` directory shows right now."""

    commit: Commit | None  # None: a branch with no commits yet
    writable: bool

    @property
    def root(self) -> bytes | None:
        return bytes.fromhex(self.commit.root) if self.commit else None

    @property
    def immutable(self) -> bool:
        """Never changes: a finished commit named by its id (the kernel may cache it)."""
        return self.commit is not None and not self.commit.is_open and not self.writable


@dataclass
class Stale:
    """What the kernel must forget after a change: the nodes at ``keys`` and the names
    ``(parent key, name)``."""

    keys: list[Key] = field(default_factory=list)
    names: list[tuple[Key, str]] = field(default_factory=list)


class Views:
    def __init__(self, pfs: Pfs, overlay: Overlay) -> None:
        self.pfs = pfs
        self.overlay = overlay
        self._meta = pfs.store.meta
        self._trees: Trees = pfs.store.trees
        self.prefetch = Prefetcher(self._meta, self._trees)
        # Views read from LMDB, valid until the model changes: every request asks for one,
        # and reading it costs a transaction and three records. ``model_changed`` (called
        # from any thread, after the change's transaction) empties it.
        self._views: dict[tuple[str, str], View] = {}
        self._entries: dict[tuple[bytes, str], Entry | None] = {}  # see ``tree_entry``
        self._generation = 0
        self.known_roots: dict[tuple[str, str], bytes | None] = {}  # as the kernel saw them
        self.own_roots: set[str] = set()  # trees this mount's own writes produced
        self._writer = threading.local()  # marks the worker thread applying our own change
        self.empty_dir = Entry(KIND_DIR, 0, 0o755, 0, self._trees.empty)

    def close(self) -> None:
        self.prefetch.close()

    # -- views -------------------------------------------------------------------------------

    def model_changed(self) -> None:
        """Forget cached views; called by the thread that changed the model, after its
        transaction committed and before anyone is told of the change."""
        self._views = {}
        self._generation += 1

    def view(self, repo: str, name: str) -> View:
        views = self._views
        view = views.get((repo, name))
        if view is not None:
            return view
        generation = self._generation
        view = self._read_view(repo, name)
        # A change that committed while we read bumped the generation: our view may predate
        # it, so it is not kept (it is still the right answer for a request that raced it).
        if generation == self._generation:
            views[(repo, name)] = view
        return view

    def _read_view(self, repo: str, name: str) -> View:
        records = self.pfs.records
        with self._meta.read() as txn:
            repo_row = records.repo(txn, repo)
            branch = records.find_branch(txn, repo, name)
            if branch is not None:
                cid = branch.open or branch.head
                commit = records.commit(txn, cid) if cid else None
                view = View(commit, repo_row.kind == "input")
                self.known_roots.setdefault((repo, name), view.root)
                return view
            if not is_commit_id(name):
                raise NotFound(f"no branch or commit {name} in {repo}")
            commit = records.commit(txn, name)
            if commit.repo != repo:
                raise NotFound(f"commit {name} is not in {repo}")
            return View(commit, False)

    def repos(self) -> list[str]:
        # ``direct``: no journal barrier, as the overlay shows the staged files already, and a
        # flush here would stall the mount's requests behind an LMDB commit.
        return sorted(r.name for r in self.pfs.direct.repos.list())

    def check_repo(self, name: str) -> None:
        """NotFound unless repo ``name`` exists."""
        self.pfs.direct.repos.inspect(name)

    def branches(self, repo: str) -> list[str]:
        return [b.name for b in self.pfs.direct.repos.list_branches(repo)]

    # -- entries -----------------------------------------------------------------------------

    def entry(self, repo: str, name: str, path: str, fid: int, view: View | None = None
              ) -> Entry | None:
        """The entry at ``path`` of a view as the mount shows it: a file being
        written (``fid`` in the overlay) with its local size, else the tree's, else a
        directory staged and not yet in the tree."""
        overlay = self.overlay
        dirty = overlay.files.get(fid)
        if dirty is not None:
            return Entry(KIND_FILE, dirty.size(), dirty.mode, dirty.mtime_ns, b"")
        view = view or self.view(repo, name)
        root = view.root
        if root is None:
            return self.empty_dir if not path else overlay.new_dirs.get(fid)
        found = self.tree_entry(root, path)
        return found if found is not None else overlay.new_dirs.get(fid)

    def tree_entry(self, root: bytes, path: str) -> Entry | None:
        """``path`` in the tree ``root``, remembered: a tree never changes, and the kernel
        asks for the same few paths again and again (a directory's attributes after every
        file created in it, each name of a ``cp -r`` twice)."""
        key = (root, path)
        try:
            return self._entries[key]  # None too: the name is not there (cp asks twice)
        except KeyError:
            pass
        with self._meta.read() as txn:
            found = self._trees.lookup(txn, root, path)
        if len(self._entries) >= ENTRY_CACHE:
            self._entries.clear()
        self._entries[key] = found
        return found

    def exists(self, view: View, key: Key) -> bool:
        """Whether ``key`` names something now: in the tree, or created and not stored."""
        if key in self.overlay.created:
            return True
        return view.root is not None and self.tree_entry(view.root, key[2]) is not None

    def is_empty(self, directory: Entry, key: Key) -> bool:
        """Whether the directory ``directory`` at ``key`` holds nothing, staged or stored."""
        with self._meta.read() as txn:
            if self._trees.count(txn, directory.ref):
                return False
        return not self.overlay.created_below(key)

    def pair(self, view: View, a: str, b: str) -> tuple[Entry | None, Entry | None]:
        """The entries at two paths of ``view``, read together (a rename's source and
        target)."""
        root = view.root
        if root is None:
            return None, None
        with self._meta.read() as txn:
            return self._trees.lookup(txn, root, a), self._trees.lookup(txn, root, b)

    # -- listings ----------------------------------------------------------------------------

    def open_listing(self, directory: Entry, key: Key) -> list[str]:
        """Start listing ``directory`` (at ``key``): read its pages ahead, and return the
        names created in it that the tree does not hold yet, sorted."""
        with self._meta.read() as txn:  # the listing's first read anyway
            self.prefetch.directory(self._trees.node(txn, directory.ref))
            created = self.overlay.created_in(key)
            if created:  # a file still open may already be in the tree (stored at a flush)
                created = [n for n in created
                           if self._trees.find(txn, directory.ref, n) is None]
        return sorted(created)

    def listing(self, tree: bytes, after: str | None, extra: Iterable[str]
                ) -> Iterator[tuple[str, Entry | None]]:
        """The names of the directory page ``tree`` after ``after``, then those of ``extra``
        it does not hold (created since), with their entries where the tree has them."""
        trees = self._trees
        with self._meta.read() as txn:
            yield from trees.listdir(txn, tree, after)
            for name in extra:
                if trees.find(txn, tree, name) is None:  # else stored since: listed above
                    yield name, None

    # -- data --------------------------------------------------------------------------------

    def read(self, entry: Entry, offset: int, size: int) -> bytes:
        return b"".join(self.pfs.direct.files.read(entry, offset, size))

    @property
    def store_root(self) -> Path:
        """The store's directory: it names the mount, and its disk is the mount's."""
        return self.pfs.store.root

    def statfs(self) -> os.statvfs_result:
        return os.statvfs(self.pfs.store.root)

    # -- this mount's own changes ------------------------------------------------------------

    async def apply(self, repo: str, name: str, changes: dict[str, Change],
                    batch: WriteBatch | None = None) -> None:
        """Apply changes to the open commit of a branch (opened if need be), in a worker
        thread, staged files first so that changes land in their order."""

        def write() -> Commit:
            self._writer.active = True
            try:
                self.pfs.journal.flush()
                return self.pfs.direct.files.apply(f"{repo}@{name}", changes, batch=batch,
                                                   finish=False)
            finally:
                self._writer.active = False

        commit = await trio.to_thread.run_sync(write)
        self.known_roots[(repo, name)] = bytes.fromhex(commit.root)
        if len(self.own_roots) > 4096:
            self.own_roots.clear()
        self.own_roots.add(commit.root)

    def flush_journal(self) -> None:
        """Apply staged files to LMDB (in a worker thread), as this mount's own change."""
        self._writer.active = True
        try:
            self.pfs.journal.flush()
        finally:
            self._writer.active = False

    async def settle(self) -> None:
        """Let staged files reach the tree (in a worker thread, if any are staged): a
        change computed from the tree (a directory's new mode, a rename's source) must see
        every file closed before it."""
        if self.pfs.journal.pending():
            await trio.to_thread.run_sync(self.flush_journal)

    def own_change(self, event: Event) -> bool:
        """Whether the calling thread is applying one of this mount's own changes: written
        by its handlers, or staged by them and applied by whichever thread flushed the
        journal (an API request does, holding its lock)."""
        return event.root is not None and (bool(getattr(self._writer, "active", False))
                                           or self.pfs.journal.applying_here())

    # -- invalidation ------------------------------------------------------------------------

    def stale(self, event: Event, known: Callable[[Key], bool]) -> Stale:
        """What the kernel must forget for ``event``, among the nodes it may hold
        (``known``): found by diffing the branch's tree as the kernel saw it and now."""
        out = Stale()
        if event.kind in ("repo_created", "repo_deleted"):
            out.names.append((ROOT, event.repo))
            out.keys.append(ROOT)
            return out
        repo_key: Key = (event.repo, None, "")
        if not known(repo_key) or event.branch is None:
            return out
        if event.kind in ("branch_changed", "commit_deleted"):
            out.keys.append(repo_key)
            if event.kind == "commit_deleted" and event.commit:
                out.names.append((repo_key, event.commit))
        key = (event.repo, event.branch)
        if key not in self.known_roots:
            return out
        if event.root is not None and event.root in self.own_roots:
            return out  # this mount made the change: the kernel saw it happen
        try:
            view = self.view(event.repo, event.branch)
        except PfsError:
            out.names.append((repo_key, event.branch))
            self.known_roots.pop(key, None)
            return out
        old, new = self.known_roots[key], view.root
        if old == new:
            return out
        self.known_roots[key] = new
        trees = self._trees
        seen: set[str] = set()
        with self._meta.read() as txn:
            for path, _, _ in trees.diff(txn, old or trees.empty, new or trees.empty):
                parts = path.split("/")
                for depth in range(len(parts), 0, -1):
                    sub = "/".join(parts[:depth])
                    if sub in seen:
                        break
                    seen.add(sub)
                    node: Key = (event.repo, event.branch, sub)
                    if known(node):
                        out.keys.append(node)
                    parent: Key = (event.repo, event.branch, "/".join(parts[:depth - 1]))
                    if known(parent):
                        out.keys.append(parent)
                        # A directory that stays a directory keeps its dentry: dropping it
                        # would break the cwd of every process inside it (getcwd: ENOENT).
                        if depth == len(parts) or not _dir_in_both(trees, txn, old, new, sub):
                            out.names.append((parent, parts[depth - 1]))
        return out


def _dir_in_both(trees: Trees, txn: lmdb.Transaction, old: bytes | None, new: bytes | None,
                 path: str) -> bool:
    if old is None or new is None:
        return False
    before, after = trees.lookup(txn, old, path), trees.lookup(txn, new, path)
    return (before is not None and after is not None and before.kind == KIND_DIR
            and after.kind == KIND_DIR)
