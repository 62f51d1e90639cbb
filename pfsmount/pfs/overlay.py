"""The mount's write overlay: files being written and directories made, not yet in the tree.

A file opened for writing gets a staging copy (``Dirty``, in ``staged``), shared by every
handle on it; the overlay counts those handles, stores the file when one is flushed, synced
or the last one closes (its bytes to a pack and its entry to the staging journal: closed =
stored, safe from a crash), and drops the copy once it is closed and the journal has reached
LMDB, since until then it is the only copy the mount can serve. A directory made with the
default mode is staged the same way. Names made here and not yet stored are ``created``.

Files are named by an opaque ``fid`` (the adapter's inode number); where a file is now, and
who else holds it, is the adapter's (``Inodes``). Nothing here knows about FUSE or errnos
beyond raising the model's errors; a failed write or save is a ``Failed`` with its errno.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import trio

from pfsmount.errors import IsADirectory, NotFound, PfsError
from pfsmount.pfs.staged import Dirty
from pfsmount.pfs.system import Pfs
from pfsmount.store import KIND_DIR, KIND_FILE, MKDIR, Content, Entry, WriteBatch

Key = tuple[str, str | None, str]  # (repo, view, path): "" for a view's root
INLINE_INGEST = 256 * 1024  # files up to this size are hashed and packed on the trio thread


class Failed(OSError):
    """A file's write or save failed: it is never stored, and every operation on it fails
    with the same errno until its last handle closes (see ``Dirty``)."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))


class Inodes(Protocol):
    """What the overlay needs of whoever names its files (the mount's inode table)."""

    def where(self, fid: int) -> tuple[Key, bool]:
        """Where the file is now, and whether its name is gone (unlinked)."""

    def held(self, fid: int, delta: int) -> None:
        """The overlay starts (1) or stops (-1) holding the file."""

    def rebase(self, fid: int, dirty: Dirty) -> int:
        """A new version was staged: readers of the stored content read ``dirty`` from now
        on; how many moved."""


class Overlay:
    def __init__(self, pfs: Pfs, staging: Path, inodes: Inodes) -> None:
        self.pfs = pfs
        self.staging = staging
        staging.mkdir(parents=True, exist_ok=True)
        self.inodes = inodes
        self.files: dict[int, Dirty] = {}  # fid -> file being written
        self.new_dirs: dict[int, Entry] = {}  # fid -> directory staged, not yet in the tree
        self.created: dict[Key, int] = {}  # made here, not yet stored -> fid
        self._where: dict[int, Key] = {}  # the reverse of ``created``

    # -- names made here ---------------------------------------------------------------------

    def _create(self, key: Key, fid: int) -> None:
        self.created[key] = fid
        self._where[fid] = key

    def forget_created(self, key: Key, fid: int | None = None) -> int | None:
        """``key`` is no longer a name made here (unlinked, removed; only if it is ``fid``'s
        when given); the fid it named."""
        found = self.created.get(key)
        if found is None or (fid is not None and found != fid):
            return None
        del self.created[key]
        if self._where.get(found) == key:
            del self._where[found]
        return found

    def _uncreate(self, fid: int) -> None:
        key = self._where.pop(fid, None)
        if key is not None and self.created.get(key) == fid:
            del self.created[key]

    def rename_created(self, old: Key, new: Key) -> int | None:
        """Names made here move with a rename of ``old`` (and what is below it) to ``new``;
        the fid that was made at ``new``, now replaced."""
        replaced = self.forget_created(new)
        moving = self.forget_created(old)
        if moving is not None:
            self._create(new, moving)
        prefix = old[2] + "/"
        for key in [k for k in self.created
                    if k[:2] == old[:2] and k[2].startswith(prefix)]:
            fid = self.created.pop(key)
            self._create((key[0], key[1], new[2] + key[2][len(old[2]):]), fid)
        return replaced

    def created_below(self, key: Key) -> bool:
        prefix = key[2] + "/"
        return any(k[:2] == key[:2] and k[2].startswith(prefix) for k in self.created)

    def created_in(self, key: Key) -> list[str]:
        """Names made here directly in the directory at ``key``."""
        prefix = key[2] + "/" if key[2] else ""
        return [k[2][len(prefix):] for k in self.created
                if k[:2] == key[:2] and k[2].startswith(prefix)
                and "/" not in k[2][len(prefix):]]

    # -- directories -------------------------------------------------------------------------

    def mkdir(self, fid: int, key: Key) -> None:
        """Stage a new directory with the default mode: one journal write, no LMDB commit
        (an fsync) per directory of a ``tar x`` or ``cp -r``. Until the journal is
        flushed it is served from ``new_dirs``; files created in it stage their own records
        after this one."""
        self.new_dirs[fid] = Entry(KIND_DIR, 0, 0o755, time.time_ns(),
                                   self.pfs.store.trees.empty)
        self._create(key, fid)
        self.inodes.held(fid, 1)  # kept until flushed, like a file being stored
        token = trio.lowlevel.current_trio_token()

        def flushed() -> None:  # from the thread that flushed the journal
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._dir_flushed, fid)

        self.pfs.journal.stage(f"{key[0]}@{key[1]}", key[2], MKDIR, on_flushed=flushed)

    def _dir_flushed(self, fid: int) -> None:
        """A staged directory reached the tree: served from there."""
        self.new_dirs.pop(fid, None)
        self._uncreate(fid)
        self.inodes.held(fid, -1)

    # -- files -------------------------------------------------------------------------------

    def create(self, fid: int, key: Key, mode: int) -> Dirty:
        """A new file at ``key``, open for writing by one handle."""
        dirty = Dirty(self.staging, mode & 0o7777)
        dirty.changed = True  # an empty new file is still a file
        dirty.handles = 1
        self.files[fid] = dirty
        self._create(key, fid)
        self.inodes.held(fid, 1)
        return dirty

    async def open(self, fid: int, entry: Callable[[], Entry | None], truncate: bool
                   ) -> Dirty:
        """The file's staging copy for one more handle (made from ``entry()``, the stored
        file, if it is not being written yet)."""
        dirty = self.files.get(fid)
        if dirty is None:
            stored = entry()
            if stored is None:
                raise NotFound("no such file")
            if stored.kind == KIND_DIR:
                raise IsADirectory("is a directory")
            dirty = Dirty(self.staging, stored.mode)
            if not truncate and stored.size:
                try:
                    await trio.to_thread.run_sync(dirty.fill,
                                               self.pfs.direct.files.read(stored))
                except BaseException:
                    dirty.close()  # its staging file holds space until closed
                    raise
            dirty.changed = truncate and stored.size > 0  # O_TRUNC alone changes the file
            self.files[fid] = dirty
            self.inodes.held(fid, 1)
        elif dirty.error:
            raise Failed(dirty.error)  # until its last handle closes and it is dropped
        elif truncate:
            dirty.truncate(0)
        dirty.handles += 1
        return dirty

    def share(self, dirty: Dirty) -> Dirty:
        """One more handle reads ``dirty`` (a reader of a file being written)."""
        dirty.handles += 1
        return dirty

    async def change(self, fid: int, entry: Callable[[], Entry | None], size: int | None,
                     mode: int | None, mtime_ns: int | None) -> bool:
        """Change the size, mode or mtime of a file being written (or, for a new size, one
        opened for it); False if the file is not being written and the change is the
        tree's."""
        dirty = self.files.get(fid)
        if dirty is None:
            if size is None:
                return False
            dirty = await self.open(fid, entry, truncate=size == 0)
        else:
            dirty.handles += 1  # held while we work: a journal flush must not close it
        try:
            if size is not None:
                dirty.truncate(size)
            if mode is not None:
                dirty.mode, dirty.changed = mode, True
            if mtime_ns is not None:
                dirty.mtime_ns, dirty.changed = mtime_ns, True
            if dirty.handles <= 1:  # no open file will store it: store it now
                await self.store(fid, dirty)
        finally:
            dirty.handles -= 1
            if dirty.handles <= 0:
                self.drop(fid)
        return True

    async def store(self, fid: int, dirty: Dirty) -> None:
        """Store a written file in its branch's open commit (closed = stored).

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
            await self._store(fid, dirty)
        finally:
            saving.release()

    async def _store(self, fid: int, dirty: Dirty) -> None:
        if dirty.error:  # its bytes are not what was written: the close fails, see ``Dirty``
            raise Failed(dirty.error)
        if not dirty.changed or self.inodes.where(fid)[1]:  # unchanged, or unlinked
            return
        batch = WriteBatch()
        dirty.changed = False  # a write landing while this one is stored marks it again
        dirty.handles += 1  # a journal flush meanwhile must not close what is being read
        try:
            content = await self._ingest(dirty, batch)
        except BaseException as e:
            dirty.changed = True
            self.pfs.store.packs.gate.leave(batch.chunks)  # gc need not wait for it
            if isinstance(e, OSError | PfsError):  # the store's disk is full, say
                raise Failed(dirty.failed(e.errno)) from None  # the close reports it
            raise
        finally:
            dirty.handles -= 1
        entry = Entry(KIND_FILE, content.size, dirty.mode, dirty.mtime_ns, content.digest)
        token = trio.lowlevel.current_trio_token()

        def flushed() -> None:  # from the thread that flushed the journal
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._flushed, fid, dirty)

        (repo, view, path), _ = self.inodes.where(fid)  # renamed meanwhile: its new name
        try:
            self.pfs.journal.stage(f"{repo}@{view}", path, entry, batch, flushed)
        except OSError as e:
            dirty.changed = True
            self.pfs.store.packs.gate.leave(batch.chunks)
            raise Failed(dirty.failed(e.errno)) from None
        dirty.staged += 1
        dirty.handles += self.inodes.rebase(fid, dirty)

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

    async def sync(self, fid: int, dirty: Dirty) -> None:
        """fsync: store the file and make its packs durable."""
        await self.store(fid, dirty)
        try:
            await trio.to_thread.run_sync(self.pfs.store.packs.sync)
        except OSError as e:
            raise Failed(dirty.failed(e.errno)) from None

    async def release(self, fid: int, dirty: Dirty) -> None:
        """A handle on ``dirty`` closed: the last one stores the file and drops the copy
        (``dirty.error`` says whether the save failed)."""
        dirty.handles -= 1
        if dirty.handles <= 0:
            try:
                await self.store(fid, dirty)
            finally:
                self.drop(fid)

    def _flushed(self, fid: int, dirty: Dirty) -> None:
        dirty.staged -= 1
        if dirty.staged <= 0 and dirty.handles <= 0 and self.files.get(fid) is dirty:
            self.drop(fid)

    def drop(self, fid: int) -> None:
        """Let go of a file no handle holds, once the journal has reached LMDB."""
        dirty = self.files.get(fid)
        if dirty is not None and dirty.staged > 0:
            return  # still the only copy the mount can serve: dropped once flushed
        dirty = self.files.pop(fid, None)
        if dirty is not None:
            dirty.close()
            self._uncreate(fid)  # not a file created since at its name
            self.inodes.held(fid, -1)
