"""Real file semantics on a writable branch, checked with system calls.

Each test works in a fresh repo's master branch. What is written must read back before
close, after close, and through the CLI once the commit is finished.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fuse.conftest import Mount


def errno_of(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno is not None
    return info.value.errno


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
    assert not os.access(script, os.X_OK) or os.geteuid() == 0
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
