"""Everyday tools on a writable branch: cp, rsync, tar, git, vim and sqlite3.

Each tool runs as a user would run it, in a subprocess against the mount; the test then
compares what landed (through the mount and through the API) with what was meant to.
packaging/install.sh installs every tool used here, so a missing one fails the test.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fuse.conftest import Mount


def need(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"none of {names} is installed; packaging/install.sh installs them")


def sh(*argv: str | os.PathLike[str], cwd: Path | None = None,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                       cwd=cwd, input=input, stdin=None if input is not None
                       else subprocess.DEVNULL)
    assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p


def make_tree(root: Path) -> Path:
    """A small tree with what copies get wrong: depth, empties, big and odd files, an
    executable, symlinks (relative, dangling, to a directory)."""
    root.mkdir(parents=True)
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "empty").write_bytes(b"")
    (root / "small.txt").write_text("hello\n")
    (root / "a" / "mid.bin").write_bytes(os.urandom(200_000))
    (root / "a" / "b" / "big.bin").write_bytes(os.urandom(2_500_000))
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep\n" * 1000)
    for i in range(40):
        (root / "a" / f"n{i:02}.txt").write_text(f"file {i}\n" * (i + 1))
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "private").write_text("secret")
    os.chmod(root / "private", 0o600)
    os.symlink("small.txt", root / "link")
    os.symlink("../small.txt", root / "a" / "uplink")
    os.symlink("nowhere", root / "dangling")
    os.symlink("a/b", root / "dirlink")
    (root / "name with spaces & ünïcode").write_text("odd name\n")
    return root


def snapshot(root: Path, modes: bool = True) -> dict[str, tuple[object, ...]]:
    """Every path below ``root`` with its type and content (or link target) and mode."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            perm = stat.S_IMODE(st.st_mode) if modes else stat.S_IMODE(st.st_mode) & 0o100
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", perm)
            else:
                out[rel] = ("file", p.read_bytes(), perm)
    return out


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src")


def api_tree(mount: Mount, repo: str) -> dict[str, tuple[object, ...]]:
    """The branch as the API sees it (types and contents), to check what was stored."""
    out: dict[str, tuple[object, ...]] = {}
    with mount.api() as c:
        for f in c.walk_files(f"{repo}@master"):
            rel = f.path.lstrip("/")
            if f.type == "file":
                out[rel] = ("file", c.read_file(f"{repo}@master:/{rel}"))
            elif f.type == "symlink":
                out[rel] = ("link", f.target)
    return out


def files_only(tree: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """Files and links with their content, without modes (the API walk lists no dirs)."""
    return {k: v[:2] for k, v in tree.items() if v[0] != "dir"}


def test_cp_r_and_cp_a(mount: Mount, src: Path) -> None:
    repo = mount.new_repo("cp")
    br = mount.branch(repo)
    sh("cp", "-r", src, br / "r")
    p = sh("cp", "-a", src, br / "a")
    assert p.stderr == "", p.stderr
    want = snapshot(src)
    assert snapshot(br / "a") == want
    assert snapshot(br / "r", modes=False) == snapshot(src, modes=False)
    # What was stored is what the mount shows.
    mount.finish(f"{repo}@master")
    stored = api_tree(mount, repo)
    assert {k[2:]: v for k, v in stored.items() if k.startswith("a/")} == files_only(want)
    # And copying back out of the mount gives the source again.
    back = src.parent / "back"
    sh("cp", "-a", br / "a", back)
    assert snapshot(back) == want


def test_rsync_a(mount: Mount, src: Path) -> None:
    rsync = need("rsync")
    repo = mount.new_repo("rs")
    dest = mount.branch(repo) / "dest"
    sh(rsync, "-a", f"{src}/", f"{dest}/")
    assert snapshot(dest) == snapshot(src)
    # A second run finds nothing to send: sizes, modes and file times were all kept.
    # (Directory times are not checked: a directory's mtime moves when its entries change.)
    again = sh(rsync, "-a", "-i", f"{src}/", f"{dest}/")
    changed = [ln for ln in again.stdout.splitlines() if not ln.startswith(".d")]
    assert changed == [], again.stdout
    # Change a file in the source: rsync rewrites it through a temp file and a rename.
    (src / "a" / "n05.txt").write_text("changed\n")
    (src / "small.txt").unlink()
    sh(rsync, "-a", "--delete", f"{src}/", f"{dest}/")
    assert snapshot(dest) == snapshot(src)
    assert not [n for n in os.listdir(dest / "a") if n.startswith(".")]  # no temp left over
    # In-place updates too.
    (src / "a" / "mid.bin").write_bytes(os.urandom(200_000))
    # -I: the new mid.bin has the old size and may have the old mtime to the second, and
    # rsync's quick check would then skip it.
    sh(rsync, "-a", "-I", "--inplace", "--no-whole-file", f"{src}/", f"{dest}/")
    assert snapshot(dest) == snapshot(src)


def test_tar_x(mount: Mount, src: Path) -> None:
    tar = need("tar")
    repo = mount.new_repo("tar")
    archive = src.parent / "src.tar"
    with tarfile.open(archive, "w") as t:
        t.add(src, arcname="src")
    sh(tar, "xf", archive, "-C", mount.branch(repo))
    assert snapshot(mount.branch(repo) / "src") == snapshot(src)
    # mtimes come from the archive.
    st_src, st_mnt = os.stat(src / "a" / "mid.bin"), os.stat(mount.branch(repo) / "src" / "a"
                                                              / "mid.bin")
    assert int(st_mnt.st_mtime) == int(st_src.st_mtime)
    # Extracting over the same files again replaces them in place.
    sh(tar, "xf", archive, "-C", mount.branch(repo))
    assert snapshot(mount.branch(repo) / "src") == snapshot(src)
    # And a tarball made from the mount extracts to the source again.
    out = src.parent / "out"
    out.mkdir()
    sh(tar, "cf", src.parent / "again.tar", "-C", mount.branch(repo), "src")
    sh(tar, "xf", src.parent / "again.tar", "-C", out)
    assert snapshot(out / "src") == snapshot(src)


def test_git_clone_and_commit(mount: Mount, tmp_path: Path) -> None:
    git = need("git")
    ident = ["-c", "user.name=T", "-c", "user.email=t@example.invalid",
             "-c", "init.defaultBranch=main", "-c", "safe.directory=*"]
    origin = tmp_path / "origin"
    sh(git, *ident, "init", "-q", origin)
    for i in range(5):
        (origin / f"f{i}.txt").write_text(f"version {i}\n" * 100)
        (origin / "dir").mkdir(exist_ok=True)
        (origin / "dir" / "data.bin").write_bytes(os.urandom(10_000 + i))
        sh(git, *ident, "-C", origin, "add", "-A")
        sh(git, *ident, "-C", origin, "commit", "-q", "-m", f"commit {i}")
    (origin / "tool.sh").write_text("#!/bin/sh\n")
    os.chmod(origin / "tool.sh", 0o755)
    sh(git, *ident, "-C", origin, "add", "-A")
    sh(git, *ident, "-C", origin, "commit", "-q", "-m", "exec")

    repo = mount.new_repo("git")
    clone = mount.branch(repo) / "clone"
    sh(git, *ident, "clone", "-q", origin, clone)
    sh(git, *ident, "-C", clone, "fsck", "--full", "--strict")
    assert sh(git, *ident, "-C", clone, "status", "--porcelain").stdout == ""
    log = sh(git, *ident, "-C", clone, "log", "--oneline").stdout.splitlines()
    assert len(log) == 6
    assert (clone / "f3.txt").read_text() == "version 3\n" * 100
    assert os.access(clone / "tool.sh", os.X_OK)
    assert stat.S_IMODE(os.stat(clone / "tool.sh").st_mode) & 0o111
    # Work in the clone: edit, commit, gc (packs, lock files, renames).
    (clone / "f0.txt").write_text("edited in the mount\n")
    sh(git, *ident, "-C", clone, "commit", "-q", "-am", "from the mount")
    sh(git, *ident, "-C", clone, "gc", "-q")
    sh(git, *ident, "-C", clone, "fsck", "--full")
    assert sh(git, *ident, "-C", clone, "status", "--porcelain").stdout == ""
    assert len(sh(git, *ident, "-C", clone, "log", "--oneline").stdout.splitlines()) == 7
    # The sealed commit holds a working clone: clone it again, from the read-only view.
    cid = mount.finish(f"{repo}@master")
    again = tmp_path / "again"
    sh(git, *ident, "clone", "-q", mount.mnt / repo / cid / "clone", again)
    assert (again / "f0.txt").read_text() == "edited in the mount\n"


VIM_MODES = {
    "in-place": "set backupcopy=yes",
    "rename": "set backupcopy=no backup writebackup",
    "auto": "set backupcopy=auto",
}


@pytest.mark.parametrize("mode", sorted(VIM_MODES))
def test_vim_edits_and_writes(mount: Mount, mode: str) -> None:
    vim = need("vim", "vim.tiny", "vim.basic", "ex")
    repo = mount.new_repo("vim")
    br = mount.branch(repo)
    f = br / "notes.txt"
    f.write_text("".join(f"line {i} old\n" for i in range(200)))
    os.chmod(f, 0o640)
    sh(vim, "-u", "NONE", "-i", "NONE", "-N", "-Es",
       "-c", VIM_MODES[mode], "-c", "set backupdir=. directory=.",
       "-c", "%s/old/new/", "-c", "$put ='appended'", "-c", "1d", "-c", "wq", f,
       cwd=br)
    want = "".join(f"line {i} new\n" for i in range(1, 200)) + "appended\n"
    assert f.read_text() == want
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o640  # vim keeps the mode across a rename
    leftovers = sorted(set(os.listdir(br)) - {"notes.txt", "notes.txt~"})
    assert leftovers == [], leftovers  # the swap file is gone
    # A second edit of the file vim just wrote.
    sh(vim, "-u", "NONE", "-i", "NONE", "-N", "-Es", "-c", VIM_MODES[mode],
       "-c", "set backupdir=. directory=.", "-c", "2,$d", "-c", "wq", f, cwd=br)
    assert f.read_text() == "line 1 new\n"
    mount.finish(f"{repo}@master")
    assert mount.get(f"{repo}@master:/notes.txt") == b"line 1 new\n"


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite3_database(mount: Mount, tmp_path: Path, journal: str) -> None:
    sqlite = need("sqlite3")
    repo = mount.new_repo("sql")
    db = mount.branch(repo) / "app.db"
    sh(sqlite, db, f"PRAGMA journal_mode={journal};"
       "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB);")
    for batch in range(6):
        rows = ";".join(
            f"INSERT INTO t (name, blob) VALUES ('row{batch}-{i}', randomblob({50 + i * 40}))"
            for i in range(60))
        sh(sqlite, db, f"BEGIN; {rows}; COMMIT;")
    sh(sqlite, db, "BEGIN; UPDATE t SET name = name || '!' WHERE id % 3 = 0; "
                   "DELETE FROM t WHERE id % 7 = 0; COMMIT;")
    sh(sqlite, db, "CREATE INDEX t_name ON t(name); VACUUM;")
    p = sh(sqlite, db, "PRAGMA integrity_check; SELECT count(*), "
                       "sum(name LIKE '%!') FROM t;")
    total = 360 - 360 // 7
    marked = sum(1 for i in range(1, 361) if i % 3 == 0 and i % 7 != 0)
    assert p.stdout.split() == ["ok", f"{total}|{marked}"], p.stdout
    if journal == "wal":
        sh(sqlite, db, "PRAGMA wal_checkpoint(TRUNCATE);")
    # The stored file is a consistent database on its own (what a pipeline would read).
    mount.finish(f"{repo}@master")
    copy = tmp_path / "copy.db"
    copy.write_bytes(mount.get(f"{repo}@master:/app.db"))
    con = sqlite3.connect(copy)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("SELECT count(*) FROM t").fetchone() == (total,)
    finally:
        con.close()
    # Python's sqlite3 module on the mount, with many small transactions.
    con = sqlite3.connect(mount.branch(repo) / "py.db")
    try:
        con.execute(f"PRAGMA journal_mode={journal}")
        con.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")
        for i in range(40):
            with con:
                con.execute("INSERT INTO kv VALUES (?, ?)", (i, "x" * i))
        with con:
            con.execute("UPDATE kv SET v = 'updated' WHERE k < 10")
        assert con.execute("SELECT count(*), sum(v = 'updated') FROM kv").fetchone() == (40, 10)
    finally:
        con.close()
    con = sqlite3.connect(mount.branch(repo) / "py.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("SELECT count(*) FROM kv").fetchone() == (40,)
    finally:
        con.close()
