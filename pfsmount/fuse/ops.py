"""The pyfuse3 adapter: kernel requests on inodes and handles, answered from the model.

``/pfs/<repo>/<branch>/`` shows a branch's open commit, else its head, and is writable for
input repos: the first change opens a commit. ``/pfs/<repo>/<commit-id>/`` shows any commit,
read-only. Every handler runs under ``_guard``: model errors become their errno, anything
unexpected is logged and becomes EIO, so no exception ever ends ``pyfuse3.main()``.
Metadata reads are small LMDB lookups done inline; file data, hashing and writes to the store
run in worker threads so that requests overlap.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyfuse3
import trio

from pfsmount.errors import NotFound, PfsError
from pfsmount.fuse.dirty import Dirty
from pfsmount.fuse.nodes import Node, Nodes
from pfsmount.fuse.prefetch import Prefetcher
from pfsmount.pfs import Commit, Pfs
from pfsmount.pfs.refs import check_component, is_commit_id
from pfsmount.store import KIND_DIR, KIND_FILE, KIND_LINK, MKDIR, Content, Entry, WriteBatch
from pfsmount.store.tree import Change, Retouch

log = logging.getLogger("pfsmount.fuse")

IMMUTABLE_TIMEOUT = 3600.0  # finished commits never change
MUTABLE_TIMEOUT = 1.0  # branches: changes from elsewhere are also invalidated at once
INLINE_INGEST = 256 * 1024  # files up to this size are hashed and packed on the trio thread
# Files up to this size are read on the trio thread: a trip to a worker thread and back costs
# more than reading one small chunk, even from a cold disk (cat of 10k small files).
INLINE_READ = 64 * 1024
ENTRY_CACHE = 65536  # tree entries remembered (see ``tree_entry``)
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def storable_name(name: bytes) -> str:
    """A name the kernel asks to create, as the store keeps it. A name the store cannot keep
    (not UTF-8: EINVAL; over 255 bytes: ENAMETOOLONG) is refused here, at create, so that no
    program is told a file was written that the commit would then lack."""
    return check_component(os.fsdecode(name))


@dataclass(frozen=True)
class View:
    """What a ``/pfs/<repo>/<view>`` directory shows right now."""

    commit: Commit | None  # None: a branch with no commits yet
    writable: bool

    @property
    def root(self) -> bytes | None:
        return bytes.fromhex(self.commit.root) if self.commit else None


@dataclass
class Handle:
    node: Node
    entry: Entry | None = None  # the content a read-only handle reads
    dirty: Dirty | None = None


@dataclass
class DirHandle:
    node: Node
    names: list[str] | None = None  # root and repo directories: a snapshot of names
    entry: Entry | None = None  # tree directories: the directory as opendir saw it
    extra: list[str] = field(default_factory=list)  # created files not yet in the tree
    # Next offset -> the tree name just before it, for the names the last readdir replied:
    # the kernel resumes after the last name its caller took, which is before the last one
    # we sent when the caller's buffer filled first; restarting from the first name then
    # makes a long listing quadratic.
    resume: dict[int, str] = field(default_factory=dict)

    @property
    def tree(self) -> bytes | None:
        """The page to list (immutable)."""
        return self.entry.ref if self.entry is not None else None


class Operations(pyfuse3.Operations):
    # The kernel's writeback cache: small application writes become large WRITE requests
    # (9x faster at 4 KiB) and big ones overlap. The kernel then sends the file's new mtime
    # (a SETATTR) before each close of a written file; that costs one round trip, since
    # setattr of a file being written no longer waits for a journal flush.
    enable_writeback_cache = True

    def __init__(self, pfs: Pfs, staging: Path) -> None:
        super().__init__()
        self.pfs = pfs
        self.staging = staging
        staging.mkdir(parents=True, exist_ok=True)
        self.nodes = Nodes()
        self.prefetch = Prefetcher(pfs.store.meta, pfs.store.trees)
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self.dirty: dict[int, Dirty] = {}  # inode -> file being written
        self.pending: dict[tuple[str, str | None, str], Node] = {}  # created, not yet stored
        self.new_dirs: dict[int, Entry] = {}  # inode -> directory staged, not yet in the tree
        self.known_roots: dict[tuple[str, str], bytes | None] = {}
        self.own_roots: set[str] = set()  # trees this mount's own writes produced
        self._ids = itertools.count(1)
        self.uid, self.gid = os.getuid(), os.getgid()
        self._writer = threading.local()  # marks the worker thread applying our own change
        # Views read from LMDB, valid until the model changes: every request asks for one,
        # and reading it costs a transaction and three records. ``model_changed`` (called
        # from any thread, after the change's transaction) empties it.
        self._views: dict[tuple[str, str], View] = {}
        self._entries: dict[tuple[bytes, str], Entry | None] = {}  # see ``tree_entry``
        self._generation = 0

    def model_changed(self) -> None:
        """Forget cached views; called by the thread that changed the model, after its
        transaction committed and before anyone is told of the change."""
        self._views = {}
        self._generation += 1

    def writing_here(self) -> bool:
        """Whether the calling thread is applying one of this mount's own changes (so the
        events it emits describe something the kernel already saw happen)."""
        return bool(getattr(self._writer, "active", False))

    # -- the model ---------------------------------------------------------------------------

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
        with self.pfs.store.meta.read() as txn:
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

    def entry(self, node: Node, view: View | None = None) -> Entry | None:
        """The entry a tree node names now (a file being written reports its local size)."""
        dirty = self.dirty.get(node.ino)
        if dirty is not None:
            return Entry(KIND_FILE, dirty.size(), dirty.mode, dirty.mtime_ns, b"")
        if node.unlinked:  # its name is gone (or names another file): open handles remain
            held: Iterator[Handle | DirHandle] = itertools.chain(self.handles.values(),
                                                                 self.dirs.values())
            return next((h.entry for h in held if h.node is node and h.entry is not None),
                        None)
        assert node.view is not None
        view = view or self.view(node.repo, node.view)
        if view.root is None:
            return Entry(KIND_DIR, 0, 0o755, 0, self.pfs.store.trees.empty) if not node.path \
                else self.new_dirs.get(node.ino)
        found = self.tree_entry(view.root, node.path)
        return found if found is not None else self.new_dirs.get(node.ino)

    def tree_entry(self, root: bytes, path: str) -> Entry | None:
        """``path`` in the tree ``root``, remembered: a tree never changes, and the kernel
        asks for the same few paths again and again (a directory's attributes after every
        file created in it, each name of a ``cp -r`` twice)."""
        key = (root, path)
        try:
            return self._entries[key]  # None too: the name is not there (cp asks twice)
        except KeyError:
            pass
        with self.pfs.store.meta.read() as txn:
            found = self.pfs.store.trees.lookup(txn, root, path)
        if len(self._entries) >= ENTRY_CACHE:
            self._entries.clear()
        self._entries[key] = found
        return found

    def attrs(self, node: Node, entry: Entry | None = None, view: View | None = None
              ) -> pyfuse3.EntryAttributes:
        """The attributes of ``node``; ``entry`` and ``view``, when the caller has them
        already (a lookup, a listing), save reading them again."""
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.st_uid, a.st_gid = self.uid, self.gid
        a.st_blksize = 128 * 1024
        a.entry_timeout = a.attr_timeout = MUTABLE_TIMEOUT
        if node.view is None:  # the root or a repo directory
            a.st_mode = stat.S_IFDIR | 0o755
            a.st_nlink = 2
            return a
        view = view or self.view(node.repo, node.view)
        if entry is None or node.ino in self.dirty or node.unlinked:
            entry = self.entry(node, view)  # a file being written has its own size
        if entry is None:
            raise fail(errno.ENOENT)
        if view.commit is not None and not view.commit.is_open and not view.writable:
            a.entry_timeout = a.attr_timeout = IMMUTABLE_TIMEOUT
        perm = entry.mode & 0o7777 if view.writable else entry.mode & 0o7555
        if entry.kind == KIND_DIR:
            a.st_mode, a.st_nlink = stat.S_IFDIR | perm, 2
        elif entry.kind == KIND_LINK:
            a.st_mode, a.st_nlink = stat.S_IFLNK | 0o777, 1
        else:
            a.st_mode, a.st_nlink = stat.S_IFREG | perm, 1
        a.st_size = entry.size if entry.kind != KIND_DIR else 0
        a.st_blocks = (a.st_size + 511) // 512
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = entry.mtime
        return a

    def node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise fail(errno.ENOENT)
        return node

    def tree_node(self, ino: int) -> tuple[Node, View]:
        node = self.node(ino)
        if node.view is None:
            raise fail(errno.EROFS if node.repo else errno.EPERM)
        return node, self.view(node.repo, node.view)

    def writable(self, ino: int) -> tuple[Node, View]:
        node, view = self.tree_node(ino)
        if not view.writable:
            raise fail(errno.EROFS)
        return node, view

    async def apply(self, node: Node, changes: dict[str, Change],
                    batch: WriteBatch | None = None) -> None:
        """Apply changes to the open commit of ``node``'s branch (opened if need be)."""
        assert node.view is not None
        ref = f"{node.repo}@{node.view}"

        def write() -> Commit:
            self._writer.active = True
            try:
                self.pfs.journal.flush()  # staged files first: changes land in their order
                return self.pfs.files.apply(ref, changes, batch=batch, finish=False)
            finally:
                self._writer.active = False

        commit = await trio.to_thread.run_sync(write)
        self.known_roots[(node.repo, node.view)] = bytes.fromhex(commit.root)
        if len(self.own_roots) > 4096:
            self.own_roots.clear()
        self.own_roots.add(commit.root)

    async def changing(self, ino: int) -> tuple[Node, View]:
        """``writable``, after staged files reached the tree: a change computed from the tree
        (a directory's new mode, a rename's source) must see every file closed before it."""
        if self.pfs.journal.pending():
            await trio.to_thread.run_sync(self.flush_journal)
        return self.writable(ino)

    def flush_journal(self) -> None:
        """Apply staged files to LMDB (in a worker thread), as this mount's own change."""
        self._writer.active = True
        try:
            self.pfs.journal.flush()
        finally:
            self._writer.active = False

    @staticmethod
    def child_path(parent: Node, name: str) -> str:
        return f"{parent.path}/{name}" if parent.path else name

    # -- lookups and attributes --------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> pyfuse3.EntryAttributes:
        parent = self.node(parent_inode)
        text = os.fsdecode(name)
        if text in (".", ".."):
            raise fail(errno.ENOENT)
        key = parent.child_key(text)
        node = self.pending.get(key)
        if node is not None:
            node.lookups += 1
            return self.attrs(node)
        entry = None
        view = None
        if not parent.repo:
            self.pfs.repos.inspect(text)
        elif parent.view is None:
            self.view(parent.repo, text)
        else:
            view = self.view(parent.repo, parent.view)
            if view.root is not None:
                entry = self.tree_entry(view.root, key[2])
            if entry is None:
                return self.missing(view)
        node = self.nodes.child(parent, text)
        attrs = self.attrs(node, entry, view)
        node.lookups += 1
        return attrs

    @staticmethod
    def missing(view: View) -> pyfuse3.EntryAttributes:
        """A negative lookup the kernel may remember (inode 0), as long as it would remember
        a positive one: tools probe many absent names (``cp`` checks each target, Python
        imports try many paths). A name added from elsewhere is invalidated like any change.
        """
        a = pyfuse3.EntryAttributes()
        a.st_ino = 0
        immutable = view.commit is not None and not view.commit.is_open and not view.writable
        a.entry_timeout = IMMUTABLE_TIMEOUT if immutable else MUTABLE_TIMEOUT
        return a

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.nodes.forget(ino, count)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext
                      ) -> pyfuse3.EntryAttributes:
        return self.attrs(self.node(inode))

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if not (fields.update_size or fields.update_mode or fields.update_mtime):
            return self.attrs(self.node(inode))  # chown, atime: accepted, not stored
        # A file being written changes only its own copy: no need to wait for staged files
        # to reach the tree (a journal flush, milliseconds). The kernel's writeback cache
        # sends such an mtime update before every close of a written file.
        node, view = self.writable(inode) if inode in self.dirty else await self.changing(inode)
        dirty = self.dirty.get(inode)
        if dirty is None and fields.update_size:
            dirty = await self.open_dirty(node, view, truncate=attr.st_size == 0)
        elif dirty is not None:
            dirty.handles += 1  # held while we work: a journal flush must not close it
        if dirty is not None:
            try:
                if fields.update_size:
                    dirty.truncate(attr.st_size)
                if fields.update_mode:
                    dirty.mode, dirty.changed = attr.st_mode & 0o7777, True
                if fields.update_mtime:
                    dirty.mtime_ns, dirty.changed = attr.st_mtime_ns, True
                if dirty.handles <= 1:  # no open file will store it: store it now
                    await self.store_dirty(node, dirty)
            finally:
                dirty.handles -= 1
                if dirty.handles <= 0:
                    self.drop_dirty(node)
            return self.attrs(node)
        entry = self.entry(node, view)
        if entry is None:
            raise fail(errno.ENOENT)
        if not node.path or node.unlinked:
            # The view root's mode and times are fixed; an unlinked file has no path to
            # store a change at (its name may belong to another file by now).
            return self.attrs(node, entry, view)
        # A retouch, not the entry read above: a directory may gain files meanwhile.
        await self.apply(node, {node.path: Retouch(
            attr.st_mode & 0o7777 if fields.update_mode else None,
            attr.st_mtime_ns if fields.update_mtime else None)})
        return self.attrs(node)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node, view = self.tree_node(inode)
        entry = self.entry(node, view)
        if entry is None or entry.kind != KIND_LINK:
            raise fail(errno.EINVAL)
        return entry.ref

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.pfs.store.root)
        s = pyfuse3.StatvfsData()
        s.f_bsize, s.f_frsize = st.f_bsize, st.f_frsize
        s.f_blocks, s.f_bfree, s.f_bavail = st.f_blocks, st.f_bfree, st.f_bavail
        s.f_files, s.f_ffree, s.f_favail = st.f_files, st.f_ffree, st.f_favail
        s.f_namemax = 255
        return s

    # -- directories -------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.node(inode)
        handle = DirHandle(node)
        if not node.repo:
            handle.names = sorted(r.name for r in self.pfs.repos.list())
        elif node.view is None:
            handle.names = [b.name for b in self.pfs.repos.list_branches(node.repo)]
        else:
            view = self.view(node.repo, node.view)
            entry = self.entry(node, view)
            if entry is None or entry.kind != KIND_DIR:
                raise fail(errno.ENOTDIR)
            handle.entry = entry
            with self.pfs.store.meta.read() as txn:  # the listing's first read anyway
                self.prefetch.directory(self.pfs.store.trees.node(txn, entry.ref))
            prefix = node.path + "/" if node.path else ""
            created = [
                k[2][len(prefix):] for k in self.pending
                if k[0] == node.repo and k[1] == node.view and k[2].startswith(prefix)
                and "/" not in k[2][len(prefix):]
            ]
            if created:  # a file still open may already be in the tree (stored at a flush)
                with self.pfs.store.meta.read() as txn:
                    created = [n for n in created
                               if self.pfs.store.trees.find(txn, entry.ref, n) is None]
            handle.extra = sorted(created)
        fh = next(self._ids)
        self.dirs[fh] = handle
        return fh

    def _listing(self, handle: DirHandle, start: int
                 ) -> Iterator[tuple[int, str, Entry | None]]:
        """(offset, name, entry if known) from ``start``; offsets are stable for the
        snapshot."""
        if handle.names is not None:
            yield from ((i, n, None) for i, n in enumerate(handle.names) if i >= start)
            return
        assert handle.tree is not None
        trees = self.pfs.store.trees
        after: str | None = None
        index = 0
        if start in handle.resume:
            index, after = start, handle.resume[start]
        with self.pfs.store.meta.read() as txn:
            for name, entry in trees.listdir(txn, handle.tree, after):
                if index >= start:
                    yield index, name, entry
                index += 1
            for name in handle.extra:
                if trees.find(txn, handle.tree, name) is not None:
                    continue  # stored since the listing began: listed above already
                if index >= start:
                    yield index, name, None
                index += 1

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs[fh]
        parent = handle.node
        view = self.view(parent.repo, parent.view) if parent.view is not None else None
        # The listed entries save a lookup from the root per name (ls -l of 100k files), but
        # only while the directory is still the one opendir saw: they come from its snapshot.
        current = self.entry(parent, view) if handle.tree is not None else None
        fresh = current is not None and current.ref == handle.tree
        resume: dict[int, str] = {}
        for offset, name, entry in self._listing(handle, start_id):
            node = self.nodes.child(parent, name)
            try:
                attrs = self.attrs(node, entry if fresh else None, view)
            except pyfuse3.FUSEError:
                continue  # gone since the snapshot (a branch or repo deleted)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, offset + 1):
                self.nodes.maybe_drop(node)
                break
            node.lookups += 1
            if entry is not None:  # resume by name only after a name of the tree
                resume[offset + 1] = name
        handle.resume = resume

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        text = storable_name(name)
        if mode & 0o7777 != 0o755:  # a mode of its own: written to the tree at once
            parent, view = await self.changing(parent_inode)
            path = self._check_new(parent, view, text)
            await self.apply(parent, {path: MKDIR})
            node = self.nodes.child(parent, text)
            await self.apply(node, {path: Retouch(mode=mode & 0o7777)})
        else:
            # Staged like a closed file: one journal write, no LMDB commit (an fsync) per
            # directory of a ``tar x`` or ``cp -r``. Until the journal is flushed, the new
            # directory is served from ``new_dirs``; files created in it stage their own
            # records after this one.
            parent, view = self.writable(parent_inode)
            path = self._check_new(parent, view, text)
            node = self.nodes.child(parent, text)
            self.new_dirs[node.ino] = Entry(KIND_DIR, 0, 0o755, time.time_ns(),
                                            self.pfs.store.trees.empty)
            self.pending[node.key] = node
            node.handles += 1  # kept until flushed, like a file being stored
            token = trio.lowlevel.current_trio_token()

            def flushed() -> None:  # from the thread that flushed the journal
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._dir_flushed, node)

            self.pfs.journal.stage(f"{node.repo}@{node.view}", path, MKDIR,
                                   on_flushed=flushed)
        attrs = self.attrs(node)
        node.lookups += 1
        return attrs

    def _check_new(self, parent: Node, view: View, name: str) -> str:
        """The path for a new ``name`` in ``parent``; EEXIST if the tree has it, or a file or
        directory not stored yet."""
        path = self.child_path(parent, name)
        if parent.child_key(name) in self.pending:
            raise fail(errno.EEXIST)
        if view.root is not None and self.tree_entry(view.root, path) is not None:
            raise fail(errno.EEXIST)
        return path

    def _dir_flushed(self, node: Node) -> None:
        """A staged directory reached the tree: serve it from there."""
        self.new_dirs.pop(node.ino, None)
        if self.pending.get(node.key) is node:
            del self.pending[node.key]
        node.handles -= 1
        self.nodes.maybe_drop(node)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                    ) -> None:
        parent, view = await self.changing(parent_inode)
        path = self.child_path(parent, os.fsdecode(name))
        entry = self.entry(self.nodes.child(parent, os.fsdecode(name)), view)
        if entry is None:
            raise fail(errno.ENOENT)
        if entry.kind != KIND_DIR:
            raise fail(errno.ENOTDIR)
        with self.pfs.store.meta.read() as txn:
            if self.pfs.store.trees.count(txn, entry.ref) or self._pending_below(parent, path):
                raise fail(errno.ENOTEMPTY)
        await self.apply(parent, {path: None})
        key = parent.child_key(os.fsdecode(name))
        gone = self.nodes.detach(key)
        if gone is not None and self.pending.get(key) is gone:
            del self.pending[key]  # made by mkdir here: its flush notice may come later

    def _pending_below(self, parent: Node, path: str) -> bool:
        prefix = path + "/"
        return any(k[0] == parent.repo and k[1] == parent.view and k[2].startswith(prefix)
                   for k in self.pending)

    # -- names -------------------------------------------------------------------------------

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> None:
        parent, _ = await self.changing(parent_inode)
        text = os.fsdecode(name)
        key = parent.child_key(text)
        view = self.view(parent.repo, parent.view or "")
        created = self.pending.pop(key, None)  # created here, maybe never stored
        entry = self.tree_entry(view.root, key[2]) if view.root else None
        if entry is None and created is None:
            raise fail(errno.ENOENT)
        if entry is not None:
            if entry.kind == KIND_DIR:
                raise fail(errno.EISDIR)
            await self.apply(parent, {key[2]: None})
        self.nodes.detach(key)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        old_parent, _ = await self.changing(parent_inode_old)
        new_parent, _ = self.writable(parent_inode_new)
        if (old_parent.repo, old_parent.view) != (new_parent.repo, new_parent.view):
            raise fail(errno.EXDEV)
        view = self.view(old_parent.repo, old_parent.view or "")
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        old_key = old_parent.child_key(os.fsdecode(name_old))
        new_key = new_parent.child_key(storable_name(name_new))
        old_path, new_path = old_key[2], new_key[2]
        if new_path.startswith(old_path + "/"):
            raise fail(errno.EINVAL)
        trees = self.pfs.store.trees
        with self.pfs.store.meta.read() as txn:
            def find(path: str) -> Entry | None:
                return trees.lookup(txn, view.root, path) if view.root else None

            src = find(old_path)
            dst = find(new_path)
            if src is None and old_key not in self.pending:
                raise fail(errno.ENOENT)
            if dst is not None or new_key in self.pending:
                if flags & pyfuse3.RENAME_NOREPLACE:
                    raise fail(errno.EEXIST)
                src_dir = src is not None and src.kind == KIND_DIR
                if dst is not None and dst.kind == KIND_DIR:
                    if not src_dir:
                        raise fail(errno.EISDIR)
                    if trees.count(txn, dst.ref) or self._pending_below(new_parent, new_path):
                        raise fail(errno.ENOTEMPTY)
                elif src_dir:
                    raise fail(errno.ENOTDIR)
        if old_path == new_path:
            return
        changes: dict[str, Change] = {old_path: None}
        if src is not None:
            changes[new_path] = src
        elif dst is not None:
            changes = {new_path: None}  # a created file moves over a stored one
        else:
            changes = {}
        if changes:
            await self.apply(old_parent, changes)
        replaced = self.pending.pop(new_key, None)
        if replaced is not None:
            replaced.unlinked = True
        moving = self.pending.pop(old_key, None)
        self.nodes.rename(old_key, new_key)
        if moving is not None:
            self.pending[new_key] = moving
        prefix = old_path + "/"  # files created below a moved directory move with it
        for key in [k for k in self.pending
                    if k[:2] == old_key[:2] and k[2].startswith(prefix)]:
            self.pending[(key[0], key[1], new_path + key[2][len(old_path):])] = \
                self.pending.pop(key)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        text = storable_name(name)
        parent, view = await self.changing(parent_inode)
        path = self.child_path(parent, text)
        if self.entry(self.nodes.child(parent, text), view) is not None:
            raise fail(errno.EEXIST)
        await self.apply(parent, {path: Entry(KIND_LINK, len(target), 0o777, time.time_ns(),
                                              bytes(target))})
        node = self.nodes.child(parent, text)
        attrs = self.attrs(node)
        node.lookups += 1
        return attrs

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        storable_name(new_name)
        raise fail(errno.EPERM)  # no hard links: a path names one file

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if stat.S_ISREG(mode):  # mknod(2) of a plain file: an empty file, as create makes
            info, attrs = await self.create(parent_inode, name, mode,
                                            os.O_WRONLY | os.O_CREAT | os.O_EXCL, ctx)
            await self.release(info.fh)
            return attrs
        raise fail(errno.EPERM)  # devices, fifos and sockets are not data

    # -- files -------------------------------------------------------------------------------

    async def open_dirty(self, node: Node, view: View, truncate: bool) -> Dirty:
        """The file's write buffer, shared by every handle writing it."""
        dirty = self.dirty.get(node.ino)
        if dirty is None:
            entry = self.entry(node, view)
            if entry is None:
                raise fail(errno.ENOENT)
            if entry.kind == KIND_DIR:
                raise fail(errno.EISDIR)
            dirty = Dirty(self.staging, entry.mode)
            if not truncate and entry.size:
                try:
                    await trio.to_thread.run_sync(dirty.fill, self.pfs.files.read(entry))
                except BaseException:
                    dirty.close()  # its staging file holds space until closed
                    raise
            dirty.changed = truncate and entry.size > 0  # O_TRUNC alone changes the file
            self.dirty[node.ino] = dirty
            node.handles += 1
        elif dirty.error:
            raise fail(dirty.error)  # until its last handle closes and it is dropped
        elif truncate:
            dirty.truncate(0)
        dirty.handles += 1
        return dirty

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        node, view = self.tree_node(inode)
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC
        handle = Handle(node)
        if writing:
            if not view.writable:
                raise fail(errno.EROFS)
            handle.dirty = await self.open_dirty(node, view, bool(flags & os.O_TRUNC))
        elif node.ino in self.dirty:
            handle.dirty = self.dirty[node.ino]
            handle.dirty.handles += 1
        else:
            handle.entry = self.entry(node, view)
            if handle.entry is None:
                raise fail(errno.ENOENT)
            if handle.entry.kind == KIND_DIR:
                raise fail(errno.EISDIR)
            node.handles += 1
        fh = next(self._ids)
        self.handles[fh] = handle
        # Cached pages stay valid: finished commits never change, and a branch's files are
        # invalidated by the mount's invalidator whenever they change elsewhere.
        return pyfuse3.FileInfo(fh=fh, keep_cache=handle.dirty is None)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent, view = self.writable(parent_inode)
        text = storable_name(name)
        node = self.nodes.child(parent, text)
        if self.entry(node, view) is not None:
            if flags & os.O_EXCL:
                raise fail(errno.EEXIST)
            return await self.open(node.ino, flags | os.O_TRUNC, ctx), self.attrs(node)
        dirty = Dirty(self.staging, mode & 0o7777)
        dirty.changed = True  # an empty new file is still a file
        dirty.handles = 1
        self.dirty[node.ino] = dirty
        self.pending[node.key] = node
        node.handles += 1
        fh = next(self._ids)
        self.handles[fh] = Handle(node, dirty=dirty)
        attrs = self.attrs(node, view=view)
        node.lookups += 1
        return pyfuse3.FileInfo(fh=fh), attrs

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        # A reader opened before a writer reads the writer's bytes, as on any filesystem
        # (the kernel asks when pages were never cached or have been evicted).
        dirty = handle.dirty or self.dirty.get(handle.node.ino)
        if dirty is not None:
            if dirty.error:
                raise fail(dirty.error)
            return dirty.read(off, size)
        assert handle.entry is not None
        entry = handle.entry
        if entry.kind == KIND_LINK:
            return entry.ref[off:off + size]
        if entry.size <= INLINE_READ:  # one small chunk: less work than a thread hop
            return b"".join(self.pfs.files.read(entry, off, size))
        return await trio.to_thread.run_sync(
            lambda: b"".join(self.pfs.files.read(entry, off, size)))

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if handle.dirty is None:
            raise fail(errno.EBADF)
        if handle.dirty.error:  # an earlier write or save failed: the file will not be saved
            raise fail(handle.dirty.error)
        return handle.dirty.write(off, buf)

    async def store_dirty(self, node: Node, dirty: Dirty) -> None:
        """Store a written file in the branch's open commit (closed = stored).

        The bytes go to a pack and the change to the staging journal: one ``write()``, safe
        from a crash of the daemon. The journal reaches LMDB in batches; until then the file
        keeps being served from its local copy.
        """
        # In order: an older version never lands after a newer one. Taking a free lock
        # without ``acquire()``'s pass through the scheduler saves a tenth of a small
        # file's close (``cp -r``); the lock is nearly always free.
        saving = dirty.saving
        if saving.locked():
            await saving.acquire()
        else:
            saving.acquire_nowait()
        try:
            await self._store_dirty(node, dirty)
        finally:
            saving.release()

    async def _store_dirty(self, node: Node, dirty: Dirty) -> None:
        if dirty.error:  # its bytes are not what was written: the close fails, see ``Dirty``
            raise fail(dirty.error)
        if node.unlinked or not dirty.changed:
            return
        assert node.view is not None
        batch = WriteBatch()
        dirty.changed = False  # a write landing while this one is stored marks it again
        dirty.handles += 1  # a journal flush meanwhile must not close what is being read
        try:
            content = await self._ingest(dirty, batch)
        except BaseException as e:
            dirty.changed = True
            self.pfs.store.packs.gate.leave(batch.chunks)  # gc need not wait for it
            if isinstance(e, OSError | PfsError):  # the store's disk is full, say
                raise fail(dirty.failed(e.errno)) from None  # the close reports it
            raise
        finally:
            dirty.handles -= 1
        entry = Entry(KIND_FILE, content.size, dirty.mode, dirty.mtime_ns, content.digest)
        token = trio.lowlevel.current_trio_token()

        def flushed() -> None:  # from the thread that flushed the journal
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._flushed, node, dirty)

        try:
            self.pfs.journal.stage(f"{node.repo}@{node.view}", node.path, entry, batch,
                                   flushed)
        except OSError as e:
            dirty.changed = True
            self.pfs.store.packs.gate.leave(batch.chunks)
            raise fail(dirty.failed(e.errno)) from None
        dirty.staged += 1
        for other in self.handles.values():  # readers of this file now read what was written
            if other.node is node and other.entry is not None:
                other.entry, other.dirty = None, dirty
                dirty.handles += 1
                node.handles -= 1

    async def _ingest(self, dirty: Dirty, batch: WriteBatch) -> Content:
        """Chunk, hash and pack a written file: inline when small, else in a worker.

        Inline only if the store's write gate lets the batch in at once: while a garbage
        collection holds it shut, waiting on this thread would stall every request, and
        the collection itself waits for writes that need this thread to finish."""
        contents = self.pfs.store.contents
        data = dirty.contents()
        fd = dirty.fd
        inline = (data is not None or dirty.size() <= INLINE_INGEST) \
            and contents.packs.gate.try_enter(batch.chunks)
        if data is not None:  # held in memory: small, cheaper than a worker thread
            if inline:
                return contents.write_bytes(batch, data)
            return await trio.to_thread.run_sync(contents.write_bytes, batch, data)
        assert fd is not None
        if inline:
            return contents.write_fd(batch, fd)
        return await trio.to_thread.run_sync(contents.write_fd, batch, fd)

    def _flushed(self, node: Node, dirty: Dirty) -> None:
        dirty.staged -= 1
        if dirty.staged <= 0 and dirty.handles <= 0 and self.dirty.get(node.ino) is dirty:
            self.drop_dirty(node)

    def drop_dirty(self, node: Node) -> None:
        dirty = self.dirty.get(node.ino)
        if dirty is not None and dirty.staged > 0:
            return  # still the only copy the mount can serve: dropped once flushed
        dirty = self.dirty.pop(node.ino, None)
        if dirty is not None:
            dirty.close()
            node.handles -= 1
            if self.pending.get(node.key) is node:  # not a file created since at its name
                del self.pending[node.key]
            self.nodes.maybe_drop(node)

    def forget_failed(self, node: Node) -> None:
        """A file whose save failed was dropped: its name gets a new inode, and the kernel
        forgets the old one's dentry, so the file shows what the store holds (or, never
        saved, is gone). A new inode because with the writeback cache the kernel keeps its
        own size of a cached inode, whatever the attributes say. Invalidated from a thread
        of its own: the kernel may wait for this very request to end."""
        parent = self.nodes.find((node.repo, node.view, node.path.rpartition("/")[0]))
        if self.nodes.find(node.key) is node:
            self.nodes.detach(node.key)
        entries = [] if parent is None else [(parent.ino, node.name)]
        threading.Thread(target=invalidate, args=([node.ino], entries), daemon=True,
                         name="pfsmount-forget-failed").start()

    async def flush(self, fh: int) -> None:
        handle = self.handles[fh]
        if handle.dirty is not None:
            await self.store_dirty(handle.node, handle.dirty)

    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.handles[fh]
        if handle.dirty is not None:
            dirty = handle.dirty
            await self.store_dirty(handle.node, dirty)
            try:
                await trio.to_thread.run_sync(self.pfs.store.packs.sync)
            except OSError as e:
                raise fail(dirty.failed(e.errno)) from None

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        node = handle.node
        if handle.dirty is not None:
            dirty = handle.dirty
            dirty.handles -= 1
            if dirty.handles <= 0:
                try:
                    await self.store_dirty(node, dirty)
                finally:
                    self.drop_dirty(node)
                    if dirty.error:
                        self.forget_failed(node)
        else:
            node.handles -= 1
            self.nodes.maybe_drop(node)




def invalidate(inodes: list[int], entries: list[tuple[int, str]]) -> None:
    """Make the kernel forget cached entries and inodes (from a thread: it may block)."""
    for parent, name in entries:
        with contextlib.suppress(OSError):  # the kernel did not have it cached
            pyfuse3.invalidate_entry(parent, os.fsencode(name))
    for ino in dict.fromkeys(inodes):
        with contextlib.suppress(OSError):
            pyfuse3.invalidate_inode(ino)


def _guard(fn: _F) -> _F:
    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        try:
            return await fn(*args)
        except pyfuse3.FUSEError:
            raise
        except PfsError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


for _name, _fn in list(vars(Operations).items()):
    if inspect.iscoroutinefunction(_fn) and _name in vars(pyfuse3.Operations):
        setattr(Operations, _name, _guard(_fn))
