"""The pyfuse3 adapter: kernel requests on inodes and handles, answered by the view model.

What ``/pfs/<repo>/<branch-or-commit-id>/...`` shows is ``pfs.view.Views``'s; files being
written are ``pfs.overlay.Overlay``'s. This class maps the kernel's inodes (``nodes``) and
file handles onto them and answers in pyfuse3's terms. Every handler runs under ``_guard``,
the one place errors become errnos: model errors become theirs, anything unexpected is
logged and becomes EIO, so no exception ever ends ``pyfuse3.main()``. Metadata reads are
small lookups done inline; file data, hashing and writes to the store run in worker threads
so that requests overlap.
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

from pfsmount.errors import PfsError
from pfsmount.fuse.nodes import Node, Nodes
from pfsmount.pfs import Pfs
from pfsmount.pfs.overlay import Failed, Key, Overlay
from pfsmount.pfs.refs import check_component
from pfsmount.pfs.staged import Dirty
from pfsmount.pfs.view import KIND_DIR, KIND_LINK, MKDIR, Change, Entry, Retouch, View, Views

log = logging.getLogger("pfsmount.fuse")

IMMUTABLE_TIMEOUT = 3600.0  # finished commits never change
MUTABLE_TIMEOUT = 1.0  # branches: changes from elsewhere are also invalidated at once
# Files up to this size are read on the trio thread: a trip to a worker thread and back costs
# more than reading one small chunk, even from a cold disk (cat of 10k small files).
INLINE_READ = 64 * 1024
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def storable_name(name: bytes) -> str:
    """A name the kernel asks to create, as the store keeps it. A name the store cannot keep
    (not UTF-8: EINVAL; over 255 bytes: ENAMETOOLONG) is refused here, at create, so that no
    program is told a file was written that the commit would then lack."""
    return check_component(os.fsdecode(name))


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
        self.nodes = Nodes()
        self.overlay = Overlay(pfs, staging, self)
        self.views = Views(pfs, self.overlay)
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self._ids = itertools.count(1)
        self.uid, self.gid = os.getuid(), os.getgid()

    # -- the overlay's view of inodes (``pfs.overlay.Inodes``) -------------------------------

    def where(self, fid: int) -> tuple[Key, bool]:
        node = self.nodes.get(fid)
        assert node is not None  # held by the overlay, so still in the table
        return node.key, node.unlinked

    def held(self, fid: int, delta: int) -> None:
        node = self.nodes.get(fid)
        assert node is not None
        node.handles += delta
        if delta < 0:
            self.nodes.maybe_drop(node)

    def rebase(self, fid: int, dirty: Dirty) -> int:
        moved = 0
        for other in self.handles.values():  # readers of this file now read what was written
            if other.node.ino == fid and other.entry is not None:
                other.entry, other.dirty = None, dirty
                other.node.handles -= 1
                moved += 1
        return moved

    # -- nodes -------------------------------------------------------------------------------

    def entry(self, node: Node, view: View | None = None) -> Entry | None:
        """The entry a tree node names now (a file being written reports its local size)."""
        if node.unlinked and node.ino not in self.overlay.files:
            # Its name is gone (or names another file): open handles remain.
            held: Iterator[Handle | DirHandle] = itertools.chain(self.handles.values(),
                                                                 self.dirs.values())
            return next((h.entry for h in held if h.node is node and h.entry is not None),
                        None)
        assert node.view is not None
        return self.views.entry(node.repo, node.view, node.path, node.ino, view)

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
        view = view or self.views.view(node.repo, node.view)
        if entry is None or node.ino in self.overlay.files or node.unlinked:
            entry = self.entry(node, view)  # a file being written has its own size
        if entry is None:
            raise fail(errno.ENOENT)
        if view.immutable:
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
        return node, self.views.view(node.repo, node.view)

    def writable(self, ino: int) -> tuple[Node, View]:
        node, view = self.tree_node(ino)
        if not view.writable:
            raise fail(errno.EROFS)
        return node, view

    async def apply(self, node: Node, changes: dict[str, Change]) -> None:
        """Apply changes to the open commit of ``node``'s branch (opened if need be)."""
        assert node.view is not None
        await self.views.apply(node.repo, node.view, changes)

    async def changing(self, ino: int) -> tuple[Node, View]:
        """``writable``, after staged files reached the tree: a change computed from the tree
        (a directory's new mode, a rename's source) must see every file closed before it."""
        await self.views.settle()
        return self.writable(ino)

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
        fid = self.overlay.created.get(key)
        if fid is not None:
            node = self.node(fid)
            node.lookups += 1
            return self.attrs(node)
        entry = None
        view = None
        if not parent.repo:
            self.views.check_repo(text)
        elif parent.view is None:
            self.views.view(parent.repo, text)
        else:
            view = self.views.view(parent.repo, parent.view)
            if view.root is not None:
                entry = self.views.tree_entry(view.root, key[2])
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
        a.entry_timeout = IMMUTABLE_TIMEOUT if view.immutable else MUTABLE_TIMEOUT
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
        if inode in self.overlay.files:
            node, view = self.writable(inode)
        else:
            node, view = await self.changing(inode)
        mode = attr.st_mode & 0o7777 if fields.update_mode else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        if await self.overlay.change(inode, lambda: self.entry(node, view),
                                     attr.st_size if fields.update_size else None,
                                     mode, mtime):
            return self.attrs(node)
        entry = self.entry(node, view)
        if entry is None:
            raise fail(errno.ENOENT)
        if not node.path or node.unlinked:
            # The view root's mode and times are fixed; an unlinked file has no path to
            # store a change at (its name may belong to another file by now).
            return self.attrs(node, entry, view)
        # A retouch, not the entry read above: a directory may gain files meanwhile.
        await self.apply(node, {node.path: Retouch(mode, mtime)})
        return self.attrs(node)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node, view = self.tree_node(inode)
        entry = self.entry(node, view)
        if entry is None or entry.kind != KIND_LINK:
            raise fail(errno.EINVAL)
        return entry.ref

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = self.views.statfs()
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
            handle.names = self.views.repos()
        elif node.view is None:
            handle.names = self.views.branches(node.repo)
        else:
            view = self.views.view(node.repo, node.view)
            entry = self.entry(node, view)
            if entry is None or entry.kind != KIND_DIR:
                raise fail(errno.ENOTDIR)
            handle.entry = entry
            handle.extra = self.views.open_listing(entry, node.key)
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
        after: str | None = None
        index = 0
        if start in handle.resume:
            index, after = start, handle.resume[start]
        for name, entry in self.views.listing(handle.tree, after, handle.extra):
            if index >= start:
                yield index, name, entry
            index += 1

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs[fh]
        parent = handle.node
        view = self.views.view(parent.repo, parent.view) if parent.view is not None else None
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
        else:  # staged, like a closed file (see ``Overlay.mkdir``)
            parent, view = self.writable(parent_inode)
            self._check_new(parent, view, text)
            node = self.nodes.child(parent, text)
            self.overlay.mkdir(node.ino, node.key)
        attrs = self.attrs(node)
        node.lookups += 1
        return attrs

    def _check_new(self, parent: Node, view: View, name: str) -> str:
        """The path for a new ``name`` in ``parent``; EEXIST if the tree has it, or a file or
        directory not stored yet."""
        key = parent.child_key(name)
        if self.views.exists(view, key):
            raise fail(errno.EEXIST)
        return key[2]

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                    ) -> None:
        parent, view = await self.changing(parent_inode)
        key = parent.child_key(os.fsdecode(name))
        entry = self.entry(self.nodes.child(parent, os.fsdecode(name)), view)
        if entry is None:
            raise fail(errno.ENOENT)
        if entry.kind != KIND_DIR:
            raise fail(errno.ENOTDIR)
        if not self.views.is_empty(entry, key):
            raise fail(errno.ENOTEMPTY)
        await self.apply(parent, {key[2]: None})
        gone = self.nodes.detach(key)
        if gone is not None:  # made by mkdir here: its flush notice may come later
            self.overlay.forget_created(key, gone.ino)

    # -- names -------------------------------------------------------------------------------

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> None:
        parent, _ = await self.changing(parent_inode)
        text = os.fsdecode(name)
        key = parent.child_key(text)
        view = self.views.view(parent.repo, parent.view or "")
        created = self.overlay.forget_created(key)  # created here, maybe never stored
        entry = self.views.tree_entry(view.root, key[2]) if view.root else None
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
        view = self.views.view(old_parent.repo, old_parent.view or "")
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        old_key = old_parent.child_key(os.fsdecode(name_old))
        new_key = new_parent.child_key(storable_name(name_new))
        old_path, new_path = old_key[2], new_key[2]
        if new_path.startswith(old_path + "/"):
            raise fail(errno.EINVAL)
        created = self.overlay.created
        src, dst = self.views.pair(view, old_path, new_path)
        if src is None and old_key not in created:
            raise fail(errno.ENOENT)
        if dst is not None or new_key in created:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise fail(errno.EEXIST)
            src_dir = src is not None and src.kind == KIND_DIR
            if dst is not None and dst.kind == KIND_DIR:
                if not src_dir:
                    raise fail(errno.EISDIR)
                if not self.views.is_empty(dst, new_key):
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
        replaced = self.overlay.rename_created(old_key, new_key)
        gone = self.nodes.get(replaced) if replaced is not None else None
        if gone is not None:
            gone.unlinked = True
        self.nodes.rename(old_key, new_key)

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

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        node, view = self.tree_node(inode)
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC
        handle = Handle(node)
        if writing:
            if not view.writable:
                raise fail(errno.EROFS)
            handle.dirty = await self.overlay.open(node.ino, lambda: self.entry(node, view),
                                                   bool(flags & os.O_TRUNC))
        elif node.ino in self.overlay.files:
            handle.dirty = self.overlay.share(self.overlay.files[node.ino])
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
        dirty = self.overlay.create(node.ino, node.key, mode)
        fh = next(self._ids)
        self.handles[fh] = Handle(node, dirty=dirty)
        attrs = self.attrs(node, view=view)
        node.lookups += 1
        return pyfuse3.FileInfo(fh=fh), attrs

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        # A reader opened before a writer reads the writer's bytes, as on any filesystem
        # (the kernel asks when pages were never cached or have been evicted).
        dirty = handle.dirty or self.overlay.files.get(handle.node.ino)
        if dirty is not None:
            if dirty.error:
                raise fail(dirty.error)
            return dirty.read(off, size)
        assert handle.entry is not None
        entry = handle.entry
        if entry.kind == KIND_LINK:
            return entry.ref[off:off + size]
        if entry.size <= INLINE_READ:  # one small chunk: less work than a thread hop
            return self.views.read(entry, off, size)
        return await trio.to_thread.run_sync(self.views.read, entry, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        if handle.dirty is None:
            raise fail(errno.EBADF)
        if handle.dirty.error:  # an earlier write or save failed: the file will not be saved
            raise fail(handle.dirty.error)
        return handle.dirty.write(off, buf)

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
            await self.overlay.store(handle.node.ino, handle.dirty)

    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self.handles[fh]
        if handle.dirty is not None:
            await self.overlay.sync(handle.node.ino, handle.dirty)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        node = handle.node
        if handle.dirty is not None:
            dirty = handle.dirty
            last = dirty.handles <= 1
            try:
                await self.overlay.release(node.ino, dirty)
            finally:
                if last and dirty.error:
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
    """The one place errors become errnos."""

    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        try:
            return await fn(*args)
        except pyfuse3.FUSEError:
            raise
        except PfsError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except Failed as e:  # a file's write or save failed earlier: reported then
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
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
