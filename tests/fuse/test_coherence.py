"""The mount and the CLI/API agree at once, in both directions, and nobody reads stale data.

A change made through the API shows in the mount as soon as the call returns (the kernel's
dentry, attribute and page caches are invalidated before then or at once), a change made in
the mount shows through the CLI, and sealing a commit (``commit finish`` or the 1.x
``finish-commit``) keeps exactly what was written, readable at ``/MNT/<repo>/<id>/``.
Replacement contents keep the same size on purpose: a stale page cache would then go
unnoticed by a size check and show the old bytes.
"""

from __future__ import annotations

import errno
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fuse.conftest import Mount


def cat(path: Path) -> bytes:
    """``cat`` in its own process, as another user of the mount would read."""
    p = subprocess.run(["cat", str(path)], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def version(n: int, size: int = 4096) -> bytes:
    return (f"version {n:04d} ".encode() * size)[:size]


def test_cli_put_shows_in_mount_at_once(mount: Mount) -> None:
    repo = mount.new_repo("co")
    f = mount.branch(repo) / "f"
    mount.ok("file", "put", f"{repo}@master:/f", "-", input=version(1))
    assert cat(f) == version(1)
    assert f.read_bytes() == version(1)  # now in this process's page cache too
    mount.ok("file", "put", f"{repo}@master:/f", "-", input=version(2))
    assert cat(f) == version(2)
    assert f.read_bytes() == version(2)
    # 1.x put-file appends.
    mount.ok("put-file", repo, "master", "f", "-f", "-", input=b"tail")
    assert f.read_bytes() == version(2) + b"tail"
    assert os.stat(f).st_size == 4096 + 4
    # A put into a directory that was listed before shows in the listing.
    d = mount.branch(repo) / "dir"
    mount.ok("file", "put", f"{repo}@master:/dir/a", "-", input=b"a")
    assert os.listdir(d) == ["a"]
    mount.ok("file", "put", f"{repo}@master:/dir/b", "-", input=b"b")
    assert sorted(os.listdir(d)) == ["a", "b"]
    mount.ok("file", "delete", f"{repo}@master:/dir/a")
    assert os.listdir(d) == ["b"]
    with pytest.raises(FileNotFoundError):
        os.stat(d / "a")


def test_api_replacement_is_never_stale(mount: Mount) -> None:
    """Read, replace through the API, read again at once: many times, to catch races
    between the API's answer and the kernel's invalidation."""
    repo = mount.new_repo("stale")
    br = mount.branch(repo)
    mount.put(f"{repo}@master:/deep/dir/f", version(0))
    fd = os.open(br / "deep" / "dir", os.O_RDONLY)  # a reader sitting in the directory
    try:
        for n in range(1, 61):
            assert (br / "deep" / "dir" / "f").read_bytes() == version(n - 1)
            mount.put(f"{repo}@master:/deep/dir/f", version(n))
            assert (br / "deep" / "dir" / "f").read_bytes() == version(n), f"round {n}"
            assert os.stat(br / "deep" / "dir" / "f").st_size == 4096
    finally:
        os.close(fd)
    # A mmap reader of the branch file sees the new content after a replace, too.
    import mmap
    with open(br / "deep" / "dir" / "f", "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        assert m[:12] == version(60)[:12]
        m.close()
    mount.put(f"{repo}@master:/deep/dir/f", version(99))
    with open(br / "deep" / "dir" / "f", "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        assert m[:] == version(99)
        m.close()


def test_process_inside_a_directory_survives_api_changes(mount: Mount) -> None:
    """A shell whose cwd is inside the branch keeps a working cwd while the API changes
    files next to it (invalidation must not drop directories that still exist)."""
    repo = mount.new_repo("cwd")
    d = mount.branch(repo) / "work" / "here"
    d.mkdir(parents=True)
    (d / "mine").write_bytes(b"mine")
    sh = subprocess.Popen(["sh"], cwd=d, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        mount.put(f"{repo}@master:/work/here/theirs", b"theirs")
        mount.put(f"{repo}@master:/work/other", b"other")
        out, err = sh.communicate("pwd -P && /bin/pwd && ls && cat theirs\n", timeout=30)
    finally:
        if sh.poll() is None:
            sh.kill()
    assert sh.returncode == 0, err
    assert out.splitlines() == [str(d), str(d), "mine", "theirs", "theirs"], (out, err)


def test_mount_write_shows_through_cli(mount: Mount) -> None:
    repo = mount.new_repo("rev")
    f = mount.branch(repo) / "f"
    f.write_bytes(b"from the mount")
    assert mount.cli_get(f"{repo}@master:/f") == b"from the mount"
    assert mount.ok("get-file", repo, "master", "f").encode() == b"from the mount"
    commits = mount.commits(repo)
    assert len(commits) == 1 and commits[0].finished is None  # the write opened a commit
    with open(f, "r+b") as fh:
        fh.seek(5)
        fh.write(b"THE")
    assert mount.cli_get(f"{repo}@master:/f") == b"from THE mount"
    (mount.branch(repo) / "sub").mkdir()
    os.rename(f, mount.branch(repo) / "sub" / "g")
    listing = mount.ok("file", "list", f"{repo}@master:/sub")
    assert "g" in listing
    assert mount.cli_get(f"{repo}@master:/sub/g") == b"from THE mount"
    p = mount.run("file", "get", f"{repo}@master:/f")
    assert p.returncode != 0  # moved away


@pytest.mark.parametrize("how", ["commit finish", "finish-commit"])
def test_finish_seals_what_was_written(mount: Mount, how: str) -> None:
    repo = mount.new_repo("fin")
    br = mount.branch(repo)
    (br / "a").write_bytes(b"a1")
    (br / "d").mkdir()
    (br / "d" / "b").write_bytes(b"b1")
    with open(br / "open-at-finish", "wb") as fh:
        fh.write(b"closed before finish")
    if how == "commit finish":
        first = mount.ok("commit", "finish", f"{repo}/master").strip()
    else:
        first = mount.ok("finish-commit", repo, "master").strip()
    assert len(first) == 32, first
    sealed = mount.mnt / repo / first
    assert sorted(os.listdir(sealed)) == ["a", "d", "open-at-finish"]
    assert (sealed / "a").read_bytes() == b"a1"
    assert (sealed / "d" / "b").read_bytes() == b"b1"
    with mount.api() as c:
        info = c.inspect_commit(f"{repo}@{first}")
    assert info.finished is not None
    assert info.size == len(b"a1b1closed before finish")
    # Reading the branch, then writing again: a new commit opens on top of the sealed one.
    assert (br / "a").read_bytes() == b"a1"
    (br / "a").write_bytes(b"a2")
    assert (br / "a").read_bytes() == b"a2"
    assert (sealed / "a").read_bytes() == b"a1"  # the sealed commit never changes
    second = mount.finish(f"{repo}@master")
    assert second != first
    with mount.api() as c:
        assert c.inspect_commit(f"{repo}@{second}").parent == first
    assert (mount.mnt / repo / second / "a").read_bytes() == b"a2"
    assert (br / "a").read_bytes() == b"a2"
    # Finishing with nothing open fails cleanly and changes nothing.
    p = mount.run("commit", "finish", f"{repo}/master")
    assert p.returncode != 0
    assert (br / "a").read_bytes() == b"a2"


def test_no_stale_reads_across_finish_and_api_puts(mount: Mount) -> None:
    repo = mount.new_repo("mix")
    br = mount.branch(repo)
    (br / "f").write_bytes(version(1))  # the mount opens a commit
    assert cat(br / "f") == version(1)
    mount.put(f"{repo}@master:/f", version(2))  # lands in the same open commit
    assert cat(br / "f") == version(2)
    assert (br / "f").read_bytes() == version(2)
    cid = mount.ok("commit", "finish", f"{repo}@master").strip()
    assert cat(br / "f") == version(2)
    assert cat(mount.mnt / repo / cid / "f") == version(2)
    mount.put(f"{repo}@master:/f", version(3))  # a commit of its own
    assert cat(br / "f") == version(3)
    assert (br / "f").read_bytes() == version(3)
    assert cat(mount.mnt / repo / cid / "f") == version(2)
    # A file deleted through the API goes from the mount at once.
    with mount.api() as c:
        c.delete_file(f"{repo}@master:/f")
    with pytest.raises(OSError) as info:
        os.stat(br / "f")
    assert info.value.errno == errno.ENOENT
    assert os.listdir(br) == []


def test_branch_switch_and_delete_show_at_once(mount: Mount) -> None:
    repo = mount.new_repo("br")
    mount.put(f"{repo}@master:/f", version(1))
    one = mount.commits(repo)[0].id
    mount.put(f"{repo}@master:/f", version(2))
    dev = mount.branch(repo, "dev")
    with mount.api() as c:
        c.create_branch(repo, "dev", head=one)
    assert dev.is_dir()
    assert (dev / "f").read_bytes() == version(1)
    assert (mount.branch(repo) / "f").read_bytes() == version(2)
    with mount.api() as c:
        c.delete_branch(repo, "dev")
    assert sorted(os.listdir(mount.mnt / repo)) == ["master"]
    assert not dev.exists()


def test_a_name_looked_up_while_missing_appears_at_once(mount: Mount) -> None:
    """The kernel may remember that a name is missing (as tools probe many); a file added
    through the API or the mount under that name must show at once all the same."""
    repo = mount.new_repo("neg")
    br = mount.branch(repo)
    (br / "d").mkdir()
    for _ in range(2):
        assert not (br / "d" / "late").exists()
        assert not (br / "late").exists()
    mount.ok("file", "put", f"{repo}@master:/d/late", "-", input=b"api")
    assert cat(br / "d" / "late") == b"api"
    (br / "late").write_bytes(b"mount")
    assert cat(br / "late") == b"mount"
    mount.ok("file", "delete", f"{repo}@master:/d/late")
    assert not (br / "d" / "late").exists()
    mount.ok("file", "put", f"{repo}@master:/d/late", "-", input=b"again")
    assert (br / "d" / "late").read_bytes() == b"again"
