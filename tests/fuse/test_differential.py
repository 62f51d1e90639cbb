"""Differential test: a branch in the mount behaves like a local directory, step by step.

Hypothesis drives the same random sequence of file operations against a fresh directory in a
writable branch of the mount and against a fresh directory on the local disk, and compares
after every step: the return value or the errno of the call, and then the whole tree (names,
types, sizes, permission bits, contents, link targets). Names come from a tiny alphabet so
that operations collide: renames over existing files, rmdir of non-empty directories,
creates over directories, paths through files and symlinks, and files that are open (being
written) while they are renamed, unlinked, truncated or read.

Differences accepted by design, and therefore not compared:
- ``st_nlink``, ``st_ino``, ``st_dev``, ``st_blocks``, ``st_blksize``: a path names one file
  (no hard links), directories report two links, inode numbers are the mount's own.
- atime, mtime and ctime: the mount stores mtime on its own clock (tested in test_semantics).
- ``st_uid``/``st_gid``: the mount shows every file as the daemon's user; chown is accepted
  and not stored.
- the ``st_size`` of a directory: ext4 reports its block size, the mount 0.
- hard links and device/fifo nodes: refused by the mount (tested in test_semantics), so they
  are not among the operations.

Everything else must match. ``PFSMOUNT_LONG_DIFF=1`` runs a much longer search.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.fuse.conftest import Mount

LONG = os.environ.get("PFSMOUNT_LONG_DIFF") == "1"
SETTINGS = settings(
    max_examples=400 if LONG else 30,
    stateful_step_count=120 if LONG else 50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

names = st.sampled_from("abc")
# Mostly shallow paths, so that most operations find something to act on.
paths = st.integers(1, 10).flatmap(
    lambda n: st.lists(names, min_size=1 if n <= 5 else 2 if n <= 8 else 3,
                       max_size=1 if n <= 5 else 2 if n <= 8 else 3).map("/".join))
link_targets = st.sampled_from(["a", "b", "a/b", "../a", "c/c", "zz", "."])
datas = st.binary(max_size=300) | st.builds(lambda n, b: bytes([b]) * n,
                                            st.integers(0, 70_000), st.integers(0, 255))
offsets = st.integers(0, 9000) | st.sampled_from([0, 4095, 4096, 65536, 131072 + 7])
sizes = st.sampled_from([0, 1, 5, 100, 4096, 5000, 70_000])
modes = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o444, 0o640])
OPEN_FLAGS = {
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "r+": os.O_RDWR,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    "c": os.O_RDWR | os.O_CREAT,
    "r": os.O_RDONLY,
}
flags = st.sampled_from(sorted(OPEN_FLAGS))
MAX_OPEN = 3
_cases = itertools.count(1)


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", value)`` or ``("err", errno name)``: what a program sees from a call."""
    try:
        return "ok", fn()
    except OSError as e:
        return "err", errno.errorcode.get(e.errno or 0, str(e.errno))


def summary(data: bytes) -> str:
    """Content in a form short enough for an assertion message."""
    return f"{len(data)}B {hashlib.sha1(data).hexdigest()[:12]} {data[:16]!r}..{data[-8:]!r}"


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path below ``root``: type, permission bits, size and content or target."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            # Renames nest directories, but never this deep: that would be a cycle.
            assert rel.count("/") < 40, f"directory cycle: {rel} under {root}"
            st_ = os.lstat(p)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(p), st_.st_size)
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            elif stat.S_ISREG(st_.st_mode):
                out[rel] = ("file", stat.S_IMODE(st_.st_mode), st_.st_size,
                            summary(p.read_bytes()))
            else:
                out[rel] = ("other", st_.st_mode)
    return out


class MountVsLocal(RuleBasedStateMachine):
    mount_base: Path
    local_base: Path

    def __init__(self) -> None:
        super().__init__()
        case = f"case{next(_cases)}"
        # Each side works in <case>/r; links to "../a" may write into <case> beside it, which
        # the comparisons cover too.
        self.cases = (self.mount_base / case, self.local_base / case)
        self.roots = (self.cases[0] / "r", self.cases[1] / "r")
        for root in self.roots:
            root.mkdir(parents=True)
        self.fds: list[tuple[int, int, str]] = []  # (mount fd, local fd, what was opened)
        self.log: list[str] = []

    # -- running one operation on both sides ---------------------------------------------------

    def both(self, what: str, fn: Callable[[Path], Any]) -> tuple[str, Any]:
        self.log.append(what)
        got = outcome(lambda: fn(self.roots[0]))
        want = outcome(lambda: fn(self.roots[1]))
        assert got == want, f"{what}: mount {got!r} != local {want!r}"
        return got

    def both_fd(self, what: str, index: int, fn: Callable[[int], Any]) -> None:
        mfd, lfd, opened = self.fds[index % len(self.fds)]
        what = f"{what} on fd of {opened}"
        self.log.append(what)
        got, want = outcome(lambda: fn(mfd)), outcome(lambda: fn(lfd))
        assert got == want, f"{what}: mount {got!r} != local {want!r}"

    @invariant()
    def same_tree(self) -> None:
        got, want = tree(self.cases[0]), tree(self.cases[1])
        if got != want:
            diff = {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want))
                    if got.get(k) != want.get(k)}
            steps = "\n  ".join(self.log[-8:])
            raise AssertionError(f"trees differ after:\n  {steps}\n(mount, local): {diff}")

    def teardown(self) -> None:
        for mfd, lfd, _ in self.fds:
            for fd in (mfd, lfd):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fds.clear()
        try:
            self.same_tree()  # after the last close, everything is stored
        finally:
            for case in self.cases:
                shutil.rmtree(case, ignore_errors=case == self.cases[1])

    # -- a starting tree ---------------------------------------------------------------------

    @initialize(layout=st.lists(st.tuples(paths, st.booleans(), datas), max_size=6))
    def populate(self, layout: list[tuple[str, bool, bytes]]) -> None:
        """A fixed small tree (so most calls find something), then a few random names."""
        for path in ("a", "c", "a/b"):
            self.both(f"mkdir {path}", lambda root, p=path: os.mkdir(root / p))
        for path, size in (("b", 100), ("a/a", 5000), ("c/a", 0), ("a/b/c", 70_000)):
            self.both(f"create {path}",
                      lambda root, p=path, n=size: (root / p).write_bytes(b"s" * n))
        self.both("symlink ../b c/b", lambda root: os.symlink("../b", root / "c" / "b"))
        for path, is_dir, data in layout:
            if is_dir:
                self.both(f"mkdir {path}", lambda root, p=path: os.mkdir(root / p))
            else:
                self.both(f"create {path} {len(data)}B",
                          lambda root, p=path, d=data: (root / p).write_bytes(d))

    # -- whole-file operations ---------------------------------------------------------------

    @rule(path=paths, how=flags, offset=st.none() | offsets, data=datas)
    def write_file(self, path: str, how: str, offset: int | None, data: bytes) -> None:
        def fn(root: Path) -> int:
            fd = os.open(root / path, OPEN_FLAGS[how], 0o644)
            try:
                return os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        self.both(f"write {path} {how} at {offset} {len(data)}B", fn)

    @rule(path=paths, size=sizes)
    def truncate(self, path: str, size: int) -> None:
        self.both(f"truncate {path} {size}", lambda root: os.truncate(root / path, size))

    @rule(src=paths, dst=paths)
    def rename(self, src: str, dst: str) -> None:
        self.both(f"rename {src} {dst}", lambda root: os.rename(root / src, root / dst))

    @rule(path=paths)
    def unlink(self, path: str) -> None:
        self.both(f"unlink {path}", lambda root: os.unlink(root / path))

    @rule(path=paths, mode=st.sampled_from([0o755, 0o700, 0o750]))
    def mkdir(self, path: str, mode: int) -> None:
        self.both(f"mkdir {path} {mode:o}", lambda root: os.mkdir(root / path, mode))

    @rule(path=paths)
    def rmdir(self, path: str) -> None:
        self.both(f"rmdir {path}", lambda root: os.rmdir(root / path))

    @rule(to=link_targets, path=paths)
    def symlink(self, to: str, path: str) -> None:
        self.both(f"symlink {to} {path}", lambda root: os.symlink(to, root / path))

    @rule(path=paths, mode=modes)
    def chmod(self, path: str, mode: int) -> None:
        self.both(f"chmod {path} {mode:o}", lambda root: os.chmod(root / path, mode))

    @rule(path=paths)
    def read(self, path: str) -> None:
        self.both(f"read {path}", lambda root: summary((root / path).read_bytes()))

    @rule(path=st.just("") | paths)
    def listdir(self, path: str) -> None:
        self.both(f"listdir {path}", lambda root: sorted(os.listdir(root / path)))

    @rule(path=paths)
    def stat(self, path: str) -> None:
        def fn(root: Path) -> tuple[int, int | None, int]:
            s = os.lstat(root / path)
            size = None if stat.S_ISDIR(s.st_mode) else s.st_size
            return stat.S_IFMT(s.st_mode), size, stat.S_IMODE(s.st_mode)

        self.both(f"lstat {path}", fn)

    @rule(path=paths)
    def readlink(self, path: str) -> None:
        self.both(f"readlink {path}", lambda root: os.readlink(root / path))

    # -- operations on files held open across steps -------------------------------------------

    @precondition(lambda self: len(self.fds) < MAX_OPEN)
    @rule(path=paths, how=flags)
    def open_keep(self, path: str, how: str) -> None:
        what = f"open {path} {how}"
        self.log.append(what)
        got = outcome(lambda: os.open(self.roots[0] / path, OPEN_FLAGS[how], 0o644))
        want = outcome(lambda: os.open(self.roots[1] / path, OPEN_FLAGS[how], 0o644))
        for kind, fd in (got, want):
            if kind == "ok" and (got[0], want[0]) != ("ok", "ok"):
                os.close(fd)
        assert got[0] == want[0] and (got[0] == "ok" or got == want), (
            f"{what}: mount {got!r} != local {want!r}")
        if got[0] != "ok":
            return
        self.fds.append((got[1], want[1], f"{path} ({how})"))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_OPEN), offset=st.none() | offsets, data=datas)
    def fd_write(self, index: int, offset: int | None, data: bytes) -> None:
        self.both_fd(f"write {len(data)}B at {offset}", index,
                     lambda fd: os.write(fd, data) if offset is None
                     else os.pwrite(fd, data, offset))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_OPEN), offset=offsets, size=sizes)
    def fd_read(self, index: int, offset: int, size: int) -> None:
        self.both_fd(f"pread {size} at {offset}", index,
                     lambda fd: summary(os.pread(fd, size, offset)))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_OPEN), size=sizes)
    def fd_truncate(self, index: int, size: int) -> None:
        self.both_fd(f"ftruncate {size}", index, lambda fd: os.ftruncate(fd, size))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_OPEN))
    def fd_stat(self, index: int) -> None:
        def fn(fd: int) -> tuple[int, int | None, int]:
            s = os.fstat(fd)
            size = None if stat.S_ISDIR(s.st_mode) else s.st_size
            return stat.S_IFMT(s.st_mode), size, stat.S_IMODE(s.st_mode)

        self.both_fd("fstat", index, fn)

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_OPEN))
    def fd_drop_cache(self, index: int) -> None:
        """Evict the file's cached pages (as memory pressure would): later reads must come
        back from the filesystem with the same bytes."""
        self.both_fd("fadvise DONTNEED", index,
                     lambda fd: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_OPEN))
    def fd_close(self, index: int) -> None:
        mfd, lfd, opened = self.fds.pop(index % len(self.fds))
        what = f"close fd of {opened}"
        self.log.append(what)
        got, want = outcome(lambda: os.close(mfd)), outcome(lambda: os.close(lfd))
        assert got == want, f"{what}: mount {got!r} != local {want!r}"


@pytest.mark.mount_deadline(480)  # Hypothesis may shrink a failure for up to 5 minutes
def test_mount_behaves_like_a_local_directory(mount: Mount, tmp_path: Path) -> None:
    repo = mount.new_repo("diff")
    base = mount.branch(repo) / "cases"
    base.mkdir()
    local = tmp_path / "local"
    local.mkdir()

    class Machine(MountVsLocal):
        mount_base = base
        local_base = local

    run_state_machine_as_test(Machine, settings=SETTINGS)
    assert os.listdir(base) == []  # every case cleaned up after itself
    # Everything the search did was stored consistently: seal it (fsck checks it at the end).
    cid = mount.finish(f"{repo}@master")
    assert os.listdir(mount.mnt / repo / cid / "cases") == []
