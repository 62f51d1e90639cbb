"""Real file semantics on a writable branch, checked with system calls.

Each test works in a fresh repo's master branch. What is written must read back before
close, after close, and through the CLI once the commit is finished.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from tests.fuse.conftest import errno_of

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fuse.conftest import Mount




@pytest.fixture
def repo(mount: Mount) -> str:
    return mount.new_repo("sem")


@pytest.fixture
def br(mount: Mount, repo: str) -> Path:
    return mount.branch(repo)


def test_create_write_read_before_close(mount: Mount, repo: str, br: Path) -> None:
    fd = os.open(br / "f", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        assert os.write(fd, b"hello world") == 11
        assert os.pread(fd, 100, 0) == b"hello world"
        # Another reader sees the bytes too while the writer still holds the file open.
        assert (br / "f").read_bytes() == b"hello world"
        assert os.stat(br / "f").st_size == 11
        assert os.pwrite(fd, b"W", 6) == 1
        assert os.pread(fd, 100, 0) == b"hello World"
        assert (br / "f").read_bytes() == b"hello World"
        assert errno_of(os.open, br / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    finally:
        os.close(fd)
    assert (br / "f").read_bytes() == b"hello World"
    # An empty new file is still a file.
    os.close(os.open(br / "empty", os.O_WRONLY | os.O_CREAT, 0o644))
    assert (br / "empty").read_bytes() == b""
    assert sorted(os.listdir(br)) == ["empty", "f"]
    assert mount.get(f"{repo}@master:/f") == b"hello World"
    assert mount.get(f"{repo}@master:/empty") == b""


def test_write_at_any_offset_makes_holes(br: Path) -> None:
    p = br / "sparse"
    with open(p, "wb") as f:
        f.write(b"abc")
        f.seek(1 << 20)
        f.write(b"end")
        f.seek(1)
        f.write(b"X")
    data = p.read_bytes()
    assert len(data) == (1 << 20) + 3
    assert data[:3] == b"aXc"
    assert data[3:1 << 20] == bytes((1 << 20) - 3)
    assert data[-3:] == b"end"
    # Rewrite the middle of an existing (stored) file without truncating it.
    fd = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(fd, b"MID", 500_000)
    finally:
        os.close(fd)
    data = p.read_bytes()
    assert len(data) == (1 << 20) + 3
    assert data[500_000:500_003] == b"MID"
    assert data[:3] == b"aXc" and data[-3:] == b"end"
    # Large random content round-trips byte for byte.
    blob = os.urandom(3 * 1024 * 1024 + 17)
    (br / "blob").write_bytes(blob)
    assert (br / "blob").read_bytes() == blob


def test_truncate_and_append(mount: Mount, repo: str, br: Path) -> None:
    p = br / "t"
    p.write_bytes(b"0123456789")
    os.truncate(p, 4)
    assert p.read_bytes() == b"0123"
    os.truncate(p, 8)  # grows with zeros
    assert p.read_bytes() == b"0123\0\0\0\0"
    with open(p, "r+b") as f:
        f.truncate(2)
        f.seek(0, os.SEEK_END)
        f.write(b"zz")
    assert p.read_bytes() == b"01zz"
    with open(p, "ab") as f:
        f.write(b"-appended")
    with open(p, "ab") as f:
        f.write(b"-again")
    assert p.read_bytes() == b"01zz-appended-again"
    # O_APPEND writes go to the end whatever the offset says.
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"!")
    finally:
        os.close(fd)
    assert p.read_bytes() == b"01zz-appended-again!"
    # O_TRUNC on open empties the file.
    with open(p, "wb") as f:
        f.write(b"new")
    assert p.read_bytes() == b"new"
    p2 = br / "shell"
    subprocess.run(["sh", "-c", f"echo one > {p2}; echo two >> {p2}; : > {br}/zero"],
                   check=True, timeout=30)
    assert p2.read_bytes() == b"one\ntwo\n"
    assert (br / "zero").read_bytes() == b""
    assert mount.get(f"{repo}@master:/t") == b"new"


def test_rename(mount: Mount, repo: str, br: Path) -> None:
    (br / "a").write_bytes(b"A")
    (br / "b").write_bytes(b"B")
    os.rename(br / "a", br / "c")
    assert sorted(os.listdir(br)) == ["b", "c"]
    assert (br / "c").read_bytes() == b"A"
    # Over an existing file, the way editors save: write a temp file, rename it over.
    (br / ".b.swp").write_bytes(b"B2")
    os.rename(br / ".b.swp", br / "b")
    assert sorted(os.listdir(br)) == ["b", "c"]
    assert (br / "b").read_bytes() == b"B2"
    # A file still open for writing is renamed over another one, then closed.
    with open(br / "tmp", "wb") as f:
        f.write(b"partial")
        os.rename(br / "tmp", br / "c")
        f.write(b"+rest")
    assert sorted(os.listdir(br)) == ["b", "c"]
    assert (br / "c").read_bytes() == b"partial+rest"
    # Directories move with everything below them, into another directory too.
    (br / "d1" / "sub").mkdir(parents=True)
    (br / "d1" / "sub" / "x").write_bytes(b"x")
    (br / "d2").mkdir()
    os.rename(br / "d1", br / "d2" / "moved")
    assert not (br / "d1").exists()
    assert (br / "d2" / "moved" / "sub" / "x").read_bytes() == b"x"
    os.rename(br / "b", br / "d2" / "b")
    assert (br / "d2" / "b").read_bytes() == b"B2"
    # Errors as POSIX says.
    (br / "full").mkdir()
    (br / "full" / "f").write_bytes(b"")
    (br / "emptydir").mkdir()
    assert errno_of(os.rename, br / "missing", br / "x") == errno.ENOENT
    assert errno_of(os.rename, br / "c", br / "full") == errno.EISDIR
    assert errno_of(os.rename, br / "emptydir", br / "c") == errno.ENOTDIR
    assert errno_of(os.rename, br / "emptydir", br / "full") in (errno.ENOTEMPTY,
                                                                 errno.EEXIST)
    assert errno_of(os.rename, br / "d2", br / "d2" / "moved" / "in") == errno.EINVAL
    os.rename(br / "emptydir", br / "d2" / "moved" / "sub" / "e")  # dir over nothing
    (br / "emptydir2").mkdir()
    (br / "target").mkdir()
    os.rename(br / "emptydir2", br / "target")  # a dir over an empty dir replaces it
    assert (br / "target").is_dir() and not (br / "emptydir2").exists()
    mount.finish(f"{repo}@master")
    assert mount.get(f"{repo}@master:/c") == b"partial+rest"
    assert mount.get(f"{repo}@master:/d2/moved/sub/x") == b"x"


def test_unlink_mkdir_rmdir(mount: Mount, repo: str, br: Path) -> None:
    (br / "f").write_bytes(b"f")
    (br / "d" / "e").mkdir(parents=True)
    assert errno_of(os.mkdir, br / "d") == errno.EEXIST
    assert errno_of(os.mkdir, br / "f") == errno.EEXIST
    assert errno_of(os.mkdir, br / "nope" / "x") == errno.ENOENT
    assert errno_of(os.rmdir, br / "d") == errno.ENOTEMPTY
    assert errno_of(os.rmdir, br / "f") == errno.ENOTDIR
    assert errno_of(os.unlink, br / "d") in (errno.EISDIR, errno.EPERM)
    assert errno_of(os.unlink, br / "nope") == errno.ENOENT
    assert errno_of(os.open, br / "f" / "x", os.O_RDONLY) == errno.ENOTDIR
    os.rmdir(br / "d" / "e")
    os.rmdir(br / "d")
    os.unlink(br / "f")
    assert os.listdir(br) == []
    # A file unlinked while open stays readable and writable through its descriptor, and
    # is not stored when it closes.
    with open(br / "ghost", "w+b") as f:
        f.write(b"boo")
        os.unlink(br / "ghost")
        f.seek(0)
        assert f.read() == b"boo"
        f.write(b"!")
    assert os.listdir(br) == []
    mkdir_mode = br / "private"
    os.mkdir(mkdir_mode, 0o700)
    assert stat.S_IMODE(os.stat(mkdir_mode).st_mode) == 0o700
    (mkdir_mode / "inside").write_bytes(b"in")
    with mount.api() as c:
        assert sorted(f.path for f in c.list_files(f"{repo}@master:/")) == ["/private"]
    assert (mkdir_mode / "inside").read_bytes() == b"in"


def test_a_new_directory_is_there_at_once_and_gone_at_once(mount: Mount, repo: str,
                                                             br: Path) -> None:
    """mkdir is staged in the journal: the directory must behave as made from the first
    moment (list it, fill it, remove it, make it again), and reach the branch."""
    for i in range(100):
        d = br / "x"
        os.mkdir(d)
        assert os.listdir(d) == [] and stat.S_ISDIR(os.stat(d).st_mode)
        assert errno_of(os.mkdir, d) == errno.EEXIST
        os.rmdir(d)
        assert errno_of(os.stat, d) == errno.ENOENT
        os.mkdir(d)
        (d / "f").write_bytes(b"%d" % i)
        assert errno_of(os.rmdir, d) == errno.ENOTEMPTY
        os.unlink(d / "f")
        os.rmdir(d)
    (br / "kept" / "deep").mkdir(parents=True)
    with mount.api() as c:
        assert [f.path for f in c.list_files(f"{repo}@master:/")] == ["/kept"]
        assert [f.path for f in c.list_files(f"{repo}@master:/kept")] == ["/kept/deep"]
    assert os.listdir(br) == ["kept"]


def test_symlinks(mount: Mount, repo: str, br: Path) -> None:
    (br / "target").write_bytes(b"T")
    (br / "dir").mkdir()
    os.symlink("target", br / "rel")
    os.symlink("../target", br / "dir" / "up")
    os.symlink("no/such/thing", br / "dangling")
    os.symlink("dir", br / "dirlink")
    assert os.readlink(br / "rel") == "target"
    assert (br / "rel").read_bytes() == b"T"
    assert (br / "dir" / "up").read_bytes() == b"T"
    assert stat.S_ISLNK(os.lstat(br / "rel").st_mode)
    assert os.lstat(br / "rel").st_size == len("target")
    assert not (br / "dangling").exists() and (br / "dangling").is_symlink()
    assert os.listdir(br / "dirlink") == ["up"]
    assert errno_of(os.symlink, "x", br / "rel") == errno.EEXIST
    # Writing through a link writes the target.
    with open(br / "rel", "ab") as f:
        f.write(b"+")
    assert (br / "target").read_bytes() == b"T+"
    os.rename(br / "rel", br / "rel2")
    assert os.readlink(br / "rel2") == "target"
    os.unlink(br / "rel2")
    assert (br / "target").read_bytes() == b"T+"
    with mount.api() as c:
        info = c.inspect_file(f"{repo}@master:/dangling")
    assert info.type == "symlink" and info.target == "no/such/thing", info


def test_executable_bit_and_chmod(mount: Mount, repo: str, br: Path) -> None:
    script = br / "run.sh"
    script.write_text("#!/bin/sh\necho ran $1\n")
    assert stat.S_IMODE(os.stat(script).st_mode) & 0o111 == 0  # created 0o666 & ~umask
    os.chmod(script, 0o755)
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o755
    p = subprocess.run([str(script), "ok"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "ran ok\n"
    os.chmod(script, 0o640)
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o640
    os.chmod(script, 0o750)
    # chmod while a writer has the file open, then the writer closes.
    with open(br / "w", "wb") as f:
        f.write(b"x")
        os.chmod(br / "w", 0o700)
        f.write(b"y")
    assert stat.S_IMODE(os.stat(br / "w").st_mode) == 0o700
    assert (br / "w").read_bytes() == b"xy"
    # A new file gets the mode it was created with (minus the umask).
    fd = os.open(br / "m", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    assert stat.S_IMODE(os.stat(br / "m").st_mode) == 0o600
    cid = mount.finish(f"{repo}@master")
    sealed = mount.mnt / repo / cid
    assert stat.S_IMODE(os.stat(sealed / "run.sh").st_mode) & 0o111
    p = subprocess.run([str(sealed / "run.sh"), "sealed"], capture_output=True, text=True,
                       timeout=30)
    assert p.stdout == "ran sealed\n", p.stderr
    with mount.api() as c:
        assert c.inspect_file(f"{repo}@master:/run.sh").mode & 0o777 == 0o750


def test_utime_is_kept(br: Path) -> None:
    p = br / "old"
    p.write_bytes(b"x")
    os.utime(p, ns=(1_000_000_000, 1_234_567_890_123_456_789))
    assert os.stat(p).st_mtime_ns == 1_234_567_890_123_456_789


def test_statfs_and_df(mount: Mount, br: Path) -> None:
    st = os.statvfs(br)
    assert st.f_bsize > 0 and st.f_blocks > 0 and st.f_namemax >= 255
    p = subprocess.run(["df", "-P", str(br)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert str(mount.mnt) in p.stdout, p.stdout
    p = subprocess.run(["df", "-i", str(mount.mnt)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


def test_hard_links_and_special_files_are_refused(br: Path) -> None:
    (br / "f").write_bytes(b"f")
    assert errno_of(os.link, br / "f", br / "hard") == errno.EPERM
    assert errno_of(os.mkfifo, br / "fifo") == errno.EPERM
    assert errno_of(os.mknod, br / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3)) in (
        errno.EPERM, errno.EACCES)
    assert errno_of(os.mknod, br / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0)) in (
        errno.EPERM, errno.EACCES)
    import socket
    s = socket.socket(socket.AF_UNIX)
    try:
        assert errno_of(s.bind, str(br / "sock")) in (errno.EPERM, errno.EACCES)
    finally:
        s.close()
    assert sorted(os.listdir(br)) == ["f"]
    # mknod of a regular file is a plain create.
    os.mknod(br / "regular", stat.S_IFREG | 0o644)
    assert (br / "regular").read_bytes() == b""
    assert sorted(os.listdir(br)) == ["f", "regular"]


# -- regressions: each found by the differential test or a tool, each a user-visible bug ------


def test_o_trunc_open_without_writing_empties_a_stored_file(mount: Mount, repo: str,
                                                            br: Path) -> None:
    """``: > file`` (open with O_TRUNC, close, no write) empties the file in the store too,
    not only in the kernel's idea of its size."""
    p = br / "log"
    p.write_bytes(b"x" * 1083)
    mount.finish(f"{repo}@master")  # stored and sealed: the next open starts from the store
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(p).st_size == 0
    assert mount.get(f"{repo}@master:/log") == b""
    os.truncate(p, 100)  # grows with zeros, not with the old bytes
    assert p.read_bytes() == bytes(100)
    subprocess.run(["sh", "-c", f": > {p}"], check=True, timeout=30)
    assert mount.get(f"{repo}@master:/log") == b""


def test_listing_a_directory_with_a_file_still_being_written(br: Path) -> None:
    """A directory with stored files and a created, still open file lists each name once
    (it used to list forever when the open file's name sorted first)."""
    for name in ("y", "z"):
        (br / name).write_bytes(name.encode())
    fds = [os.open(br / name, os.O_CREAT | os.O_WRONLY, 0o644) for name in ("a", "m", "zz")]
    try:
        p = subprocess.run(["ls", "-1", str(br)], capture_output=True, text=True, timeout=20)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["a", "m", "y", "z", "zz"]
        os.write(fds[0], b"data")
        os.fsync(fds[0])  # stored while still open: still listed once
        assert sorted(os.listdir(br)) == ["a", "m", "y", "z", "zz"]
    finally:
        for fd in fds:
            os.close(fd)
    assert sorted(os.listdir(br)) == ["a", "m", "y", "z", "zz"]
    assert (br / "a").read_bytes() == b"data"


def test_directory_renamed_while_a_file_in_it_is_open(br: Path) -> None:
    os.mkdir(br / "d")
    fd = os.open(br / "d" / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"written before the rename")
        os.rename(br / "d", br / "e")
        assert os.listdir(br / "e") == ["f"]  # the open file moved with its directory
        os.mkdir(br / "d")
        assert os.listdir(br / "d") == []
        os.mkdir(br / "d" / "f")  # no ghost of the moved file at its old path
        os.write(fd, b"; and after")
    finally:
        os.close(fd)
    assert os.listdir(br / "e") == ["f"]
    assert (br / "e" / "f").read_bytes() == b"written before the rename; and after"
    assert os.path.isdir(br / "d" / "f")


def test_open_files_renamed_and_unlinked_keep_their_names_straight(br: Path) -> None:
    # A created file renamed over another created file, both open.
    a = os.open(br / "a", os.O_CREAT | os.O_RDWR, 0o644)
    b = os.open(br / "b", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(a, b"AAA")
    os.write(b, b"BBBB")
    os.rename(br / "b", br / "a")
    os.close(a)  # closing the replaced file must not hide the one now called a
    assert os.listdir(br) == ["a"]
    os.close(b)
    assert os.listdir(br) == ["a"]
    assert (br / "a").read_bytes() == b"BBBB"
    # An open file unlinked, and a new file made at its name before it closes.
    old = os.open(br / "a", os.O_RDWR)
    os.unlink(br / "a")
    (br / "a").write_bytes(b"new")
    os.close(old)
    assert os.listdir(br) == ["a"]
    assert (br / "a").read_bytes() == b"new"
    # A directory is not empty while a created file in it is open.
    os.mkdir(br / "d")
    os.mkdir(br / "e")
    fd = os.open(br / "e" / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert errno_of(os.rename, br / "d", br / "e") == errno.ENOTEMPTY
        assert errno_of(os.rmdir, br / "e") == errno.ENOTEMPTY
    finally:
        os.close(fd)
    assert os.listdir(br / "e") == ["f"]


def test_reader_opened_before_a_writer_sees_the_new_bytes(br: Path) -> None:
    """Also once its cached pages are evicted (as memory pressure would)."""
    p = br / "f"
    p.write_bytes(b"0123456789")
    r = os.open(p, os.O_RDONLY)
    try:
        w = os.open(p, os.O_RDWR)
        os.pwrite(w, b"ABCDE", 0)
        os.close(w)
        assert os.pread(r, 100, 0) == b"ABCDE56789"
        os.posix_fadvise(r, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(r, 100, 0) == b"ABCDE56789"
    finally:
        os.close(r)


def test_fstat_on_the_descriptor_of_a_removed_directory(br: Path) -> None:
    os.mkdir(br / "d")
    fd = os.open(br / "d", os.O_RDONLY)
    try:
        os.rmdir(br / "d")
        assert stat.S_ISDIR(os.fstat(fd).st_mode)  # POSIX: the open directory lives on
    finally:
        os.close(fd)


def test_fstat_on_an_open_file_after_its_name_is_gone(br: Path) -> None:
    """``tail -f`` and friends fstat() the file they hold after it is unlinked or replaced."""
    (br / "log").write_bytes(b"old log")
    fd = os.open(br / "log", os.O_RDONLY)
    try:
        os.unlink(br / "log")
        assert os.fstat(fd).st_size == 7
        assert os.pread(fd, 100, 0) == b"old log"
        (br / "log").write_bytes(b"a new, longer log")  # a new file takes the name
        assert os.fstat(fd).st_size == 7
        os.chmod(fd, 0o600)  # accepted; must not touch the new file
        assert stat.S_IMODE(os.stat(br / "log").st_mode) == 0o644
    finally:
        os.close(fd)
    (br / "tmp").write_bytes(b"replacement")
    fd = os.open(br / "log", os.O_RDONLY)
    try:
        os.rename(br / "tmp", br / "log")  # replaced the way editors save
        assert os.fstat(fd).st_size == len(b"a new, longer log")
        assert os.pread(fd, 100, 0) == b"a new, longer log"
    finally:
        os.close(fd)
    assert (br / "log").read_bytes() == b"replacement"


def test_a_file_growing_out_of_memory_and_back_keeps_every_byte(br: Path) -> None:
    """Small files are buffered in memory and move to a local file once they grow: writes,
    holes and truncates on both sides of that boundary read back as on a disk."""
    p = br / "grow"
    want = bytearray()

    def pwrite(fd: int, data: bytes, at: int) -> None:
        os.pwrite(fd, data, at)
        if at > len(want):
            want.extend(bytes(at - len(want)))
        want[at:at + len(data)] = data

    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        pwrite(fd, b"a" * 1000, 0)
        pwrite(fd, b"b" * 3000, 100_000)  # a hole, still small
        assert os.pread(fd, 200_000, 0) == want
        pwrite(fd, os.urandom(70_000), 250_000)  # crosses 256 KiB: moves to a local file
        assert os.pread(fd, 400_000, 0) == want
        os.ftruncate(fd, 5000)  # back below the boundary
        del want[5000:]
        pwrite(fd, b"c" * 10, 6000)
        assert os.pread(fd, 400_000, 0) == want
    finally:
        os.close(fd)
    assert p.read_bytes() == want
    os.truncate(p, 300_000)  # a stored small file extended past the boundary by truncate
    want.extend(bytes(300_000 - len(want)))
    assert p.read_bytes() == want and os.stat(p).st_size == 300_000


def test_a_listing_started_before_a_change_shows_the_new_attributes(br: Path) -> None:
    """readdir answers from the directory as opendir saw it; the attributes it hands the
    kernel with each name must still be the current ones."""
    (br / "f").write_bytes(b"x" * 100)
    (br / "g").write_bytes(b"y")
    time.sleep(0.3)  # both in the tree, so in the listing's snapshot
    with os.scandir(br) as it:  # opendir now; readdir at the first next()
        (br / "f").write_bytes(b"x" * 5)
        time.sleep(0.3)  # the staged file reaches the tree; the mount drops its own copy
        names = sorted(e.name for e in it)
    assert names == ["f", "g"]
    assert os.stat(br / "f").st_size == 5
    assert (br / "f").read_bytes() == b"x" * 5


def _getdents_names(path: Path, bufsize: int) -> list[str]:
    """Names of a directory read with getdents64(2) and a small buffer, so that the kernel
    resumes the listing in the middle of what the mount sent it."""
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    sys_getdents64 = 217  # x86_64
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    names: list[str] = []
    buf = ctypes.create_string_buffer(bufsize)
    try:
        while True:
            n = libc.syscall(sys_getdents64, fd, buf, bufsize)
            assert n >= 0, os.strerror(ctypes.get_errno())
            if n == 0:
                return names
            raw = buf.raw[:n]
            pos = 0
            while pos < n:
                reclen = struct.unpack_from("H", raw, pos + 16)[0]
                name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0].decode()
                if name not in (".", ".."):
                    names.append(name)
                pos += reclen
    finally:
        os.close(fd)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="getdents64 number is x86_64's")
def test_a_long_listing_read_with_a_small_buffer_has_every_name_once(
        mount: Mount, repo: str, br: Path, tmp_path: Path) -> None:
    names = [f"n{i:05d}" for i in range(3000)]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    with mount.api() as c:
        c.put_file(f"{repo}@master:/d", tmp_path)
    assert _getdents_names(br / "d", 1024) == names
    assert sorted(os.listdir(br / "d")) == names
