"""The floor: the least a pyfuse3 filesystem can cost, for ``bench/mount.py`` to compare with.

An in-memory filesystem that does nothing but answer: no store, no hashing, no journal, one
dict per directory. It mounts with the options pfsmount uses (pyfuse3's defaults, which
include ``default_permissions``, and the kernel's writeback cache), so a small-file workload
sends it the same requests. What it costs over native is pyfuse3 and the kernel's round trips;
what pfsmount costs over it is pfsmount.

    python bench/floorfs.py MOUNTPOINT    # runs until unmounted (fusermount3 -u MOUNTPOINT)
"""

from __future__ import annotations

import errno
import stat
import sys

import pyfuse3
import trio

TIMEOUT = 1.0  # what pfsmount gives a branch's entries


class FloorFs(pyfuse3.Operations):
    enable_writeback_cache = True

    def __init__(self) -> None:
        super().__init__()
        self.children: dict[int, dict[bytes, int]] = {pyfuse3.ROOT_INODE: {}}
        self.modes: dict[int, int] = {pyfuse3.ROOT_INODE: stat.S_IFDIR | 0o755}
        self.data: dict[int, bytearray] = {}
        self.next = pyfuse3.ROOT_INODE + 1

    def attrs(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino, a.st_mode, a.st_nlink = ino, self.modes[ino], 1
        a.st_size = len(self.data.get(ino, b""))
        a.attr_timeout = a.entry_timeout = TIMEOUT
        return a

    def add(self, parent: int, name: bytes, mode: int) -> int:
        ino, self.next = self.next, self.next + 1
        self.children[parent][name] = ino
        self.modes[ino] = mode
        return ino

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext
                      ) -> pyfuse3.EntryAttributes:
        return self.attrs(inode)

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> pyfuse3.EntryAttributes:
        ino = self.children[parent_inode].get(name)
        if ino is None:  # a negative entry the kernel may keep, as pfsmount answers
            a = pyfuse3.EntryAttributes()
            a.st_ino, a.entry_timeout = 0, TIMEOUT
            return a
        return self.attrs(ino)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        ino = self.add(parent_inode, name, stat.S_IFDIR | (mode & 0o7777))
        self.children[ino] = {}
        return self.attrs(ino)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        ino = self.add(parent_inode, name, stat.S_IFREG | (mode & 0o7777))
        self.data[ino] = bytearray()
        return pyfuse3.FileInfo(fh=ino), self.attrs(ino)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(self.data[fh][off:off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.data[fh][off:off + len(buf)] = buf
        return len(buf)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if fields.update_size:
            del self.data[inode][attr.st_size:]
        return self.attrs(inode)

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        pass

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode not in self.children:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for i, (name, ino) in enumerate(sorted(self.children[fh].items())):
            if i >= start_id and not pyfuse3.readdir_reply(token, name, self.attrs(ino), i + 1):
                break

    async def releasedir(self, fh: int) -> None:
        pass

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return pyfuse3.StatvfsData()


def main() -> None:
    pyfuse3.init(FloorFs(), sys.argv[1], set(pyfuse3.default_options) | {"fsname=floorfs"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
