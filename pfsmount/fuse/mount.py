"""The mount as a daemon service: mount, serve, keep the kernel's caches true, unmount.

``mount_service`` returns the async function the daemon runs in its nursery. It clears a
stale mount left by a crashed daemon, mounts with pyfuse3, raises the mount's readahead,
and runs the invalidator: when a branch changes other than through this mount (an API put,
a pipeline, a deleted commit), the kernel is told at once which inodes and names are stale,
found by diffing the branch's old and new trees.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import subprocess
from pathlib import Path

import pyfuse3
import trio

from pfsmount.daemon.main import Service
from pfsmount.errors import PfsError
from pfsmount.fuse.nodes import ROOT_INODE
from pfsmount.fuse.ops import Operations
from pfsmount.pfs import Event, Pfs

log = logging.getLogger("pfsmount.fuse")


def clear_stale(mountpoint: Path) -> None:
    """Make ``mountpoint`` a usable empty directory, unmounting a dead FUSE mount there."""
    try:
        os.stat(mountpoint)
    except OSError as e:
        if e.errno not in (errno.ENOTCONN, errno.EIO):
            if e.errno == errno.ENOENT:
                mountpoint.mkdir(parents=True, exist_ok=True)
                return
            raise
        log.info("clearing the stale mount at %s", mountpoint)
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False,
                       capture_output=True)
        os.stat(mountpoint)
    if os.path.ismount(mountpoint):
        raise PfsError(f"{mountpoint} is already a mount point; unmount it or pick --mount")


def _raise_readahead(mountpoint: Path) -> None:
    """Ask for 1 MiB readahead on the mount (1.3-1.7x faster cold sequential reads).

    The device number comes from mountinfo: stat() of the mount itself would wait for this
    very process to answer. The kernel resets the value when it gets the answer to FUSE's
    INIT request, so this runs once ``pyfuse3.main`` has answered it.
    """
    with contextlib.suppress(OSError, StopIteration):
        line = next(
            ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if ln.split()[4] == str(mountpoint)
        )
        path = Path(f"/sys/class/bdi/{line.split()[2]}/read_ahead_kb")
        path.write_text("1024")


class Invalidator:
    """Turns model events into kernel cache invalidations, off the request path."""

    def __init__(self, pfs: Pfs, ops: Operations) -> None:
        self.pfs = pfs
        self.ops = ops
        self.send, self.receive = trio.open_memory_channel[Event](math.inf)
        self.token = trio.lowlevel.current_trio_token()

    def listener(self, event: Event) -> None:
        """Called in whatever thread changed the model."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self.send.send_nowait, event)

    def stale(self, event: Event) -> tuple[list[int], list[tuple[int, str]]]:
        """Inodes and (parent inode, name) entries the kernel must forget for ``event``."""
        nodes = self.ops.nodes
        inodes: list[int] = []
        entries: list[tuple[int, str]] = []
        if event.kind in ("repo_created", "repo_deleted"):
            entries.append((ROOT_INODE, event.repo))
            inodes.append(ROOT_INODE)
            return inodes, entries
        repo_node = nodes.find((event.repo, None, ""))
        if repo_node is None or event.branch is None:
            return inodes, entries
        if event.kind in ("branch_changed", "commit_deleted"):
            inodes.append(repo_node.ino)
            if event.kind == "commit_deleted" and event.commit:
                entries.append((repo_node.ino, event.commit))
        key = (event.repo, event.branch)
        if key not in self.ops.known_roots:
            return inodes, entries
        if event.root is not None and event.root in self.ops.own_roots:
            return inodes, entries  # this mount made the change: the kernel saw it happen
        try:
            view = self.ops.view(event.repo, event.branch)
        except PfsError:
            entries.append((repo_node.ino, event.branch))
            self.ops.known_roots.pop(key, None)
            return inodes, entries
        old, new = self.ops.known_roots[key], view.root
        if old == new:
            return inodes, entries
        self.ops.known_roots[key] = new
        trees = self.pfs.store.trees
        seen: set[str] = set()
        with self.pfs.store.meta.read() as txn:
            changed = trees.diff(txn, old or trees.empty, new or trees.empty)
            for path, _, _ in changed:
                parts = path.split("/")
                for depth in range(len(parts), 0, -1):
                    sub = "/".join(parts[:depth])
                    if sub in seen:
                        break
                    seen.add(sub)
                    node = nodes.find((event.repo, event.branch, sub))
                    if node is not None:
                        inodes.append(node.ino)
                    parent = nodes.find((event.repo, event.branch, "/".join(parts[:depth - 1])))
                    if parent is not None:
                        entries.append((parent.ino, parts[depth - 1]))
                        inodes.append(parent.ino)
        return inodes, entries

    async def run(self) -> None:
        async for event in self.receive:
            try:
                inodes, entries = self.stale(event)
            except Exception:
                log.exception("cannot work out what %s invalidates", event)
                continue
            if inodes or entries:
                await trio.to_thread.run_sync(_invalidate, inodes, entries)


def _invalidate(inodes: list[int], entries: list[tuple[int, str]]) -> None:
    for parent, name in entries:
        with contextlib.suppress(OSError):  # the kernel did not have it cached
            pyfuse3.invalidate_entry(parent, os.fsencode(name))
    for ino in dict.fromkeys(inodes):
        with contextlib.suppress(OSError):
            pyfuse3.invalidate_inode(ino)


def mount_service(pfs: Pfs, mountpoint: Path, staging: Path) -> Service:
    """The daemon service that mounts ``pfs`` at ``mountpoint`` until cancelled."""

    async def service(nursery: trio.Nursery) -> None:
        clear_stale(mountpoint)
        ops = Operations(pfs, staging)
        options = set(pyfuse3.default_options) | {"fsname=pfsmount", "subtype=pfsmount"}
        if os.geteuid() == 0:
            options.add("allow_other")
        pyfuse3.init(ops, str(mountpoint), options)
        invalidator = Invalidator(pfs, ops)
        unsubscribe = pfs.events.subscribe(invalidator.listener)

        async def serve() -> None:
            try:
                await pyfuse3.main()
            finally:
                unsubscribe()
                pyfuse3.close(unmount=True)
                log.info("unmounted %s", mountpoint)

        async def tune() -> None:
            await trio.sleep(0.5)  # INIT is the first request pyfuse3.main answers
            await trio.to_thread.run_sync(_raise_readahead, mountpoint)

        nursery.start_soon(serve)
        nursery.start_soon(invalidator.run)
        nursery.start_soon(tune)
        log.info("mounted at %s", mountpoint)

    return service
