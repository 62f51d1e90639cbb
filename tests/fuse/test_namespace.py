"""The mount's namespace: repos at the top, branches and commits below, and read-only views.

``/MNT`` lists repos, ``/MNT/<repo>`` lists branches, ``/MNT/<repo>/<branch>/`` is writable for
input repos and ``/MNT/<repo>/<commit-id>/`` is a read-only view of any commit, reachable by
``cd``/``ls``/``cat`` although it is not listed. Writes to read-only places fail at once with
EROFS (or EACCES from the kernel's permission check), never hang and never EIO.
"""

from __future__ import annotations

import errno
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fuse.conftest import Mount

READ_ONLY = (errno.EROFS, errno.EACCES)


def oserror(fn, *args) -> int:  # type: ignore[no-untyped-def]
    """The errno ``fn(*args)`` fails with; the call must fail."""
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno is not None
    return info.value.errno


def test_root_lists_repos_and_repo_lists_branches(mount: Mount) -> None:
    a, b = mount.new_repo("ns"), mount.new_repo("ns")
    names = os.listdir(mount.mnt)
    assert a in names and b in names
    assert os.listdir(mount.mnt / a) == ["master"]  # every repo starts with master
    mount.ok("branch", "create", f"{a}@dev")
    assert sorted(os.listdir(mount.mnt / a)) == ["dev", "master"]
    assert os.listdir(mount.branch(a)) == []
    assert os.path.isdir(mount.branch(a, "dev"))
    ls = subprocess.run(["ls", "-la", str(mount.mnt)], capture_output=True, text=True,
                        timeout=30)
    assert ls.returncode == 0 and a in ls.stdout, ls.stderr
    # Names that are no repo, branch or commit are simply absent.
    assert not os.path.exists(mount.mnt / "no-such-repo")
    assert not os.path.exists(mount.mnt / a / "no-such-branch")
    assert not os.path.exists(mount.mnt / a / ("0" * 32))
    # A new repo shows at once, and a deleted one goes at once.
    c = mount.new_repo("ns")
    assert c in os.listdir(mount.mnt)
    assert os.path.isdir(mount.branch(c))
    mount.ok("repo", "delete", c)
    assert c not in os.listdir(mount.mnt)
    assert not os.path.exists(mount.mnt / c)


def test_commit_id_view_ls_cat_cd(mount: Mount) -> None:
    repo = mount.new_repo("cv")
    (mount.branch(repo) / "sub").mkdir()
    (mount.branch(repo) / "sub" / "f.txt").write_bytes(b"first\n")
    (mount.branch(repo) / "top").write_bytes(b"top\n")
    first = mount.ok("commit", "finish", f"{repo}/master").strip()
    assert len(first) == 32, first
    (mount.branch(repo) / "sub" / "f.txt").write_bytes(b"second\n")
    second = mount.ok("commit", "finish", f"{repo}/master").strip()
    assert second != first

    old, new = mount.mnt / repo / first, mount.mnt / repo / second
    assert sorted(os.listdir(old)) == ["sub", "top"]
    assert (old / "sub" / "f.txt").read_bytes() == b"first\n"
    assert (new / "sub" / "f.txt").read_bytes() == b"second\n"
    assert (mount.branch(repo) / "sub" / "f.txt").read_bytes() == b"second\n"
    for tool_argv, expect in ((["cat", "sub/f.txt"], "first\n"), (["ls"], "sub\ntop\n")):
        p = subprocess.run(tool_argv, cwd=old, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert p.stdout == expect
    p = subprocess.run(["sh", "-c", f"cd {old}/sub && pwd && cat f.txt"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{old}/sub\nfirst\n"
    # Commit views are not listed among the branches, but stay reachable by id.
    assert sorted(os.listdir(mount.mnt / repo)) == ["master"]


def test_commit_id_view_is_read_only(mount: Mount) -> None:
    repo = mount.new_repo("ro")
    d = mount.branch(repo)
    (d / "dir").mkdir()
    (d / "dir" / "inner").write_bytes(b"inner")
    (d / "file").write_bytes(b"content")
    os.symlink("file", d / "link")
    cid = mount.ok("commit", "finish", f"{repo}@master").strip()
    view = mount.mnt / repo / cid

    st = os.stat(view / "file")
    assert st.st_mode & 0o222 == 0, oct(st.st_mode)  # shown without write bits
    assert oserror(os.open, view / "file", os.O_WRONLY) in READ_ONLY
    assert oserror(os.open, view / "file", os.O_RDWR | os.O_TRUNC) in READ_ONLY
    assert oserror(os.open, view / "file", os.O_WRONLY | os.O_APPEND) in READ_ONLY
    assert oserror(os.open, view / "new", os.O_WRONLY | os.O_CREAT, 0o644) in READ_ONLY
    assert oserror(os.truncate, view / "file", 0) in READ_ONLY
    assert oserror(os.unlink, view / "file") in READ_ONLY
    assert oserror(os.unlink, view / "link") in READ_ONLY
    assert oserror(os.rename, view / "file", view / "moved") in READ_ONLY
    assert oserror(os.mkdir, view / "newdir") in READ_ONLY
    assert oserror(os.rmdir, view / "dir") in READ_ONLY
    assert oserror(os.symlink, "file", view / "link2") in READ_ONLY
    assert oserror(os.chmod, view / "file", 0o777) in READ_ONLY
    assert oserror(os.utime, view / "file", (1, 1)) in READ_ONLY
    # Moving a file between a commit view and the branch crosses into a read-only view.
    assert oserror(os.rename, d / "file", view / "file2") in (*READ_ONLY, errno.EXDEV)
    # Shell redirection, as a user would try it.
    p = subprocess.run(["sh", "-c", f"echo x > {view}/file"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0
    assert "Read-only" in p.stderr or "Permission denied" in p.stderr, p.stderr
    # Nothing changed, in the view or on the branch.
    assert (view / "file").read_bytes() == b"content"
    assert sorted(os.listdir(view)) == ["dir", "file", "link"]
    assert os.readlink(view / "link") == "file"
    assert (view / "link").read_bytes() == b"content"
    assert (d / "file").read_bytes() == b"content"
    commits = mount.commits(repo)
    assert len(commits) == 1 and commits[0].finished, commits


def test_top_levels_refuse_changes(mount: Mount) -> None:
    repo = mount.new_repo("top")
    # Repos and branches are made through the CLI, not with mkdir; nothing hangs or EIOs.
    for code in (oserror(os.mkdir, mount.mnt / "newrepo"),
                 oserror(os.mkdir, mount.mnt / repo / "newbranch"),
                 oserror(os.rmdir, mount.mnt / repo / "master"),
                 oserror(os.open, mount.mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644),
                 oserror(os.rename, mount.mnt / repo, mount.mnt / "renamed")):
        assert code in (errno.EROFS, errno.EACCES, errno.EPERM), errno.errorcode[code]
    assert os.path.isdir(mount.branch(repo))
    assert not os.path.exists(mount.mnt / "newrepo")
