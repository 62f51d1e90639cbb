"""The versioning model on a real store: repos, branches, commits, files, and what fsck finds."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import msgspec
import pytest

from pfsmount.errors import (
    AlreadyExists,
    Conflict,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotFound,
    ReadOnly,
    SourceError,
)
from pfsmount.pfs import Commit, Pfs
from pfsmount.pfs.files import Data, LocalPath, Url
from pfsmount.pfs.fsck import fsck
from pfsmount.store import KIND_DIR, KIND_FILE, Entry
from pfsmount.store.tree import Inner, Leaf


def _random(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _put(pfs: Pfs, ref: str, path: str, data: bytes, **kw: bool) -> Commit:
    return pfs.files.put(ref, Data(data), path=path, **kw)


def _cat(pfs: Pfs, ref: str, offset: int = 0, size: int | None = None) -> bytes:
    _, entry = pfs.files.open(ref)
    return b"".join(pfs.files.read(entry, offset, size))


def _ls(pfs: Pfs, ref: str) -> list[str]:
    return [f.path for f in pfs.files.list(ref)]


def _tree(pfs: Pfs, ref: str) -> dict[str, bytes]:
    return {f.path: _cat(pfs, f"{ref}:{f.path}") for f in pfs.files.walk(ref)}


def _pack_bytes(pfs: Pfs) -> int:
    root = pfs.store.root
    return sum(p.stat().st_size for d in ("packs", "staging") for p in (root / d).glob("*"))


def _ids(commits: list[Commit]) -> list[str]:
    return [c.id for c in commits]


@pytest.fixture
def data(pfs: Pfs) -> Pfs:
    pfs.repos.create("data")
    return pfs


# -- repos -------------------------------------------------------------------------------------


def test_repo_create_list_inspect_delete(pfs: Pfs) -> None:
    made = pfs.repos.create("data", description="raw sales")
    assert (made.name, made.kind, made.description) == ("data", "input", "raw sales")
    pfs.repos.create("other")
    assert sorted(r.name for r in pfs.repos.list()) == ["data", "other"]
    assert pfs.repos.inspect("data").description == "raw sales"

    commit = _put(pfs, "data@master", "f", b"x")
    pfs.repos.delete("data")
    assert [r.name for r in pfs.repos.list()] == ["other"]
    with pytest.raises(NotFound):
        pfs.repos.inspect("data")
    with pytest.raises(NotFound):
        pfs.commits.inspect(f"data@{commit.id}")
    with pytest.raises(NotFound):
        pfs.repos.delete("data")
    pfs.repos.create("data")  # the name is free again, and the repo starts empty
    assert pfs.commits.list("data") == []


def test_repo_duplicate_and_bad_names(pfs: Pfs) -> None:
    pfs.repos.create("data")
    with pytest.raises(AlreadyExists):
        pfs.repos.create("data")
    assert pfs.repos.create("data", exist_ok=True).name == "data"
    with pytest.raises(AlreadyExists):
        pfs.repos.create("data", kind="pipeline", exist_ok=True)
    for bad in ["a/b", "a b", ".x", "a@b", ""]:
        with pytest.raises(InvalidArgument):
            pfs.repos.create(bad)
    assert [r.name for r in pfs.repos.list()] == ["data"]


def test_repo_size_counts_branch_heads(data: Pfs) -> None:
    assert data.repos.inspect("data").size == 0
    first = _put(data, "data@master", "a", b"x" * 100)
    _put(data, "data@master", "b", b"y" * 50)
    assert data.repos.inspect("data").size == 150
    _put(data, "data@master", "a", b"z" * 10)
    assert data.repos.inspect("data").size == 60
    data.repos.create_branch("data", "old", head=first.id)
    assert data.repos.inspect("data").size == 160
    assert {r.name: r.size for r in data.repos.list()} == {"data": 160}


def test_repo_read_by_a_pipeline_branch_cannot_be_deleted(data: Pfs) -> None:
    data.repos.create("out", kind="pipeline")
    data.repos.create_branch("out", "master", provenance=["data@master"])
    assert data.repos.inspect_branch("out", "master").provenance == ["data@master"]
    with pytest.raises(Conflict):
        data.repos.delete("data")
    assert data.repos.inspect("data").name == "data"
    data.repos.delete("out")
    data.repos.delete("data")


# -- branches ----------------------------------------------------------------------------------


def test_branch_create_at_commit_list_delete(data: Pfs) -> None:
    c1 = _put(data, "data@master", "a", b"one")
    c2 = _put(data, "data@master", "b", b"two")
    dev = data.repos.create_branch("data", "dev", head=c1.id)
    assert dev.head == c1.id
    assert sorted(b.name for b in data.repos.list_branches("data")) == ["dev", "master"]
    assert _ls(data, "data@dev") == ["/a"]

    d1 = _put(data, "data@dev", "c", b"three")
    assert d1.parent == c1.id
    assert _ls(data, "data@dev") == ["/a", "/c"]
    assert _ls(data, "data@master") == ["/a", "/b"]
    assert data.commits.inspect("data@master").id == c2.id

    data.repos.create_branch("data", "tag", head=f"data@{c2.id}")
    assert data.repos.inspect_branch("data", "tag").head == c2.id

    data.repos.delete_branch("data", "dev")
    assert sorted(b.name for b in data.repos.list_branches("data")) == ["master", "tag"]
    with pytest.raises(NotFound):
        data.repos.inspect_branch("data", "dev")
    with pytest.raises(NotFound):
        _ls(data, "data@dev")
    assert data.commits.inspect(f"data@{c1.id}").id == c1.id  # commits outlive the branch


def test_branch_head_must_be_a_finished_commit_of_the_repo(data: Pfs) -> None:
    data.repos.create("other")
    elsewhere = _put(data, "other@master", "x", b"x")
    with pytest.raises((InvalidArgument, NotFound)):
        data.repos.create_branch("data", "dev", head=elsewhere.id)
    with pytest.raises(InvalidArgument):
        data.repos.create_branch("data", "bad name")
    opened = data.commits.start("data")
    with pytest.raises(Conflict):
        data.repos.create_branch("data", "dev", head=opened.id)
    assert [b.name for b in data.repos.list_branches("data")] == ["master"]
    data.commits.finish("data@master")


# -- commits -----------------------------------------------------------------------------------


def test_start_and_finish(data: Pfs) -> None:
    opened = data.commits.start("data", "master", description="first")
    assert opened.is_open
    assert data.repos.inspect_branch("data", "master").open == opened.id
    with pytest.raises(Conflict):
        data.commits.start("data", "master")
    _put(data, "data@master", "a", b"1")
    _put(data, "data@master", "b", b"2")  # both land in the open commit
    finished = data.commits.finish("data@master")
    assert finished.id == opened.id and not finished.is_open
    assert finished.size == 2 and finished.description == "first"
    branch = data.repos.inspect_branch("data", "master")
    assert (branch.head, branch.open) == (opened.id, None)
    assert _ids(data.commits.list("data")) == [opened.id]

    with pytest.raises(Conflict):
        data.commits.finish("data@master")
    with pytest.raises(Conflict):
        data.commits.finish(f"data@{opened.id}")
    assert data.commits.inspect(f"data@{opened.id}").finished == finished.finished


def test_list_newest_first_per_repo_and_per_branch(data: Pfs) -> None:
    c1 = _put(data, "data@master", "a", b"1")
    c2 = _put(data, "data@master", "a", b"2")
    data.repos.create_branch("data", "dev", head=c1.id)
    d1 = _put(data, "data@dev", "b", b"3")
    c3 = _put(data, "data@master", "a", b"4")
    assert _ids(data.commits.list("data")) == [c3.id, d1.id, c2.id, c1.id]
    assert _ids(data.commits.list("data", "master")) == [c3.id, c2.id, c1.id]
    assert _ids(data.commits.list("data", "dev")) == [d1.id, c1.id]
    assert _ids(data.commits.list("data", limit=2)) == [c3.id, d1.id]
    with pytest.raises(NotFound):
        data.commits.list("data", "nope")
    with pytest.raises(NotFound):
        data.commits.list("nope")


def test_inspect_by_every_reference_form(data: Pfs) -> None:
    c1 = _put(data, "data@master", "a", b"1")
    c2 = _put(data, "data@master", "a", b"2")
    c3 = _put(data, "data@master", "a", b"3")
    assert data.commits.inspect("data@master").id == c3.id
    assert data.commits.inspect("data/master").id == c3.id
    assert data.commits.inspect("data").id == c3.id
    assert data.commits.inspect("data@master^").id == c2.id
    assert data.commits.inspect("data@master^^").id == c1.id
    assert data.commits.inspect("data@master~2").id == c1.id
    assert data.commits.inspect(f"data@{c2.id}").id == c2.id
    assert data.commits.inspect(f"data@{c2.id}^").id == c1.id
    assert data.commits.inspect(f"data@{c2.id[:10]}").id == c2.id
    with pytest.raises(NotFound):
        data.commits.inspect("data@master~3")
    with pytest.raises(NotFound):
        data.commits.inspect("data@nope")
    assert _cat(data, "data@master^:/a") == b"2"
    assert _cat(data, f"data@{c1.id}:/a") == b"1"


def test_delete_head_moves_branch_back(data: Pfs) -> None:
    c1 = _put(data, "data@master", "a", b"1")
    c2 = _put(data, "data@master", "b", b"2")
    data.commits.delete("data@master")
    assert data.repos.inspect_branch("data", "master").head == c1.id
    assert _ls(data, "data@master") == ["/a"]
    with pytest.raises(NotFound):
        data.commits.inspect(f"data@{c2.id}")
    assert _ids(data.commits.list("data")) == [c1.id]


def test_delete_non_head_is_refused(data: Pfs) -> None:
    c1 = _put(data, "data@master", "a", b"1")
    c2 = _put(data, "data@master", "b", b"2")
    with pytest.raises(Conflict):
        data.commits.delete(f"data@{c1.id}")
    assert _ids(data.commits.list("data")) == [c2.id, c1.id]
    assert data.repos.inspect_branch("data", "master").head == c2.id


def test_delete_open_commit_discards_its_changes(data: Pfs) -> None:
    c1 = _put(data, "data@master", "a", b"1")
    data.commits.start("data")
    _put(data, "data@master", "b", b"2")
    data.commits.delete("data@master")
    branch = data.repos.inspect_branch("data", "master")
    assert (branch.head, branch.open) == (c1.id, None)
    assert _ls(data, "data@master") == ["/a"]


def test_squash_folds_a_commit_into_its_child(data: Pfs) -> None:
    c1 = _put(data, "data@master", "a", b"1")
    c2 = _put(data, "data@master", "b", b"2")
    c3 = _put(data, "data@master", "c", b"3")
    child = data.commits.squash(f"data@{c2.id}")
    assert child.id == c3.id and child.parent == c1.id
    assert _ids(data.commits.list("data", "master")) == [c3.id, c1.id]
    assert _ls(data, "data@master") == ["/a", "/b", "/c"]  # the child keeps its content
    assert [d.path for d in data.files.diff("data@master")] == ["/b", "/c"]
    with pytest.raises(NotFound):
        data.commits.inspect(f"data@{c2.id}")
    with pytest.raises(Conflict):
        data.commits.squash("data@master")  # a head has no child


def test_wait_returns_when_the_commit_finishes(data: Pfs) -> None:
    opened = data.commits.start("data")
    with pytest.raises(Conflict):
        data.commits.wait("data@master", timeout=0.05)
    timer = threading.Timer(0.2, data.commits.finish, args=("data@master",))
    timer.start()
    t0 = time.monotonic()
    done = data.commits.wait("data@master", timeout=10)
    timer.join()
    assert done.id == opened.id and not done.is_open
    assert time.monotonic() - t0 < 5
    assert data.commits.wait(f"data@{opened.id}", timeout=0).id == opened.id


def test_provenance_is_stored(data: Pfs) -> None:
    source = _put(data, "data@master", "a", b"1")
    data.repos.create("out", kind="pipeline")
    made = data.commits.start("out", provenance=[f"data@{source.id}"], system=True)
    data.commits.finish("out@master", system=True)
    assert data.commits.inspect(f"out@{made.id}").provenance == [f"data@{source.id}"]
    assert data.commits.list("out")[0].provenance == [f"data@{source.id}"]


# -- files -------------------------------------------------------------------------------------


def test_put_overwrites_and_appends(data: Pfs) -> None:
    _put(data, "data@master", "a", b"one")
    _put(data, "data@master", "a", b"two")
    assert _cat(data, "data@master:/a") == b"two"
    _put(data, "data@master", "a", b"three", append=True)
    assert _cat(data, "data@master:/a") == b"twothree"
    _put(data, "data@master", "new", b"fresh", append=True)
    assert _cat(data, "data@master:/new") == b"fresh"
    assert len(data.commits.list("data")) == 4
    assert _cat(data, "data@master~2:/a") == b"two"


def test_append_to_a_multi_chunk_file(data: Pfs) -> None:
    big = _random(3 << 20, seed=2)
    _put(data, "data@master", "a", big)
    _put(data, "data@master", "a", b"tail", append=True)
    got = _cat(data, "data@master:/a")
    assert len(got) == len(big) + 4 and got == big + b"tail"


def test_put_refuses_a_directory_target_and_a_file_parent(data: Pfs) -> None:
    _put(data, "data@master", "d/f", b"1")
    _put(data, "data@master", "file", b"2")
    with pytest.raises(IsADirectory):
        _put(data, "data@master", "d", b"x")
    with pytest.raises(NotADirectory):
        _put(data, "data@master", "file/below", b"x")
    with pytest.raises(InvalidArgument):
        _put(data, "data@master", "", b"x")
    assert len(data.commits.list("data")) == 2


def _local_tree(top: Path) -> None:
    (top / "a" / "b").mkdir(parents=True)
    (top / "empty" / "deeper").mkdir(parents=True)
    (top / "a" / "x.txt").write_bytes(b"x" * 10)
    (top / "a" / "b" / "y.csv").write_bytes(b"y,1\n")
    (top / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (top / "run.sh").chmod(0o755)
    (top / "link").symlink_to("a/x.txt")
    (top / "dirlink").symlink_to("a")
    (top / "dangling").symlink_to("nowhere")


def test_put_directory_recursively(data: Pfs, tmp_path: Path) -> None:
    top = tmp_path / "src"
    top.mkdir()
    _local_tree(top)
    data.files.put("data@master", LocalPath(top), path="in")
    assert len(data.commits.list("data")) == 1
    infos = {f.path: f for f in data.files.glob("data@master", "**")}
    assert {p: (f.type, f.size) for p, f in infos.items()} == {
        "/in": ("dir", 10 + 4 + 18 + 7 + 1 + 7),
        "/in/a": ("dir", 14),
        "/in/a/b": ("dir", 4),
        "/in/a/b/y.csv": ("file", 4),
        "/in/a/x.txt": ("file", 10),
        "/in/dangling": ("symlink", 7),
        "/in/dirlink": ("symlink", 1),
        "/in/empty": ("dir", 0),
        "/in/empty/deeper": ("dir", 0),
        "/in/link": ("symlink", 7),
        "/in/run.sh": ("file", 18),
    }
    assert infos["/in/run.sh"].mode == 0o755
    assert infos["/in/a/x.txt"].mode == 0o644
    assert infos["/in/link"].target == "a/x.txt"
    assert infos["/in/dangling"].target == "nowhere"
    assert _cat(data, "data@master:/in/a/b/y.csv") == b"y,1\n"
    assert _cat(data, "data@master:/in/run.sh") == b"#!/bin/sh\necho hi\n"

    data.files.put("data@master", LocalPath(top / "a"))  # at the root: its contents
    assert _ls(data, "data@master") == ["/b", "/in", "/x.txt"]


def test_read_ranges(data: Pfs) -> None:
    blob = _random(2 << 20, seed=3)
    _put(data, "data@master", "blob", blob)
    size = len(blob)
    for off, n in [(0, None), (0, 0), (1, 10), (size // 3, size // 3), (size - 1, 10),
                   (size, 10), (size + 10, None)]:
        want = blob[off:] if n is None else blob[off : off + n]
        assert _cat(data, "data@master:/blob", off, n) == want
    with pytest.raises(IsADirectory):
        data.files.open("data@master:/")
    with pytest.raises(NotFound):
        data.files.open("data@master:/nope")


def test_list_and_glob(data: Pfs) -> None:
    for path in ["a.txt", "b.csv", "d/c.txt", "d/e/f.csv", "d/e/g.txt", "z/h.csv"]:
        _put(data, "data@master", path, path.encode())
    assert _ls(data, "data@master") == ["/a.txt", "/b.csv", "/d", "/z"]
    assert _ls(data, "data@master:/d") == ["/d/c.txt", "/d/e"]
    assert _ls(data, "data@master:/d/c.txt") == ["/d/c.txt"]
    assert [f.path for f in data.files.list("data@master", after="b.csv")] == ["/d", "/z"]
    assert [f.path for f in data.files.list("data@master", limit=2)] == ["/a.txt", "/b.csv"]
    with pytest.raises(NotFound):
        _ls(data, "data@master:/nope")

    def glob(pattern: str) -> list[str]:
        return [f.path for f in data.files.glob("data@master", pattern)]

    assert glob("*.txt") == ["/a.txt"]
    assert glob("*") == ["/a.txt", "/b.csv", "/d", "/z"]
    assert glob("d/*") == ["/d/c.txt", "/d/e"]
    assert glob("d/e/?.csv") == ["/d/e/f.csv"]
    assert sorted(glob("**/*.csv")) == ["/b.csv", "/d/e/f.csv", "/z/h.csv"]
    assert sorted(glob("d/**")) == ["/d/c.txt", "/d/e", "/d/e/f.csv", "/d/e/g.txt"]
    assert len(glob("**")) == 9
    assert glob("nope/*") == []
    assert glob("/") == ["/"]
    with pytest.raises(InvalidArgument):
        glob("../*")


def test_inspect_hash_is_blake3_of_content(data: Pfs) -> None:
    small, big = b"hello\n", _random(3 << 20, seed=4)
    _put(data, "data@master", "small", small)
    _put(data, "data@master", "dir/big", big)
    _put(data, "data@master", "empty", b"")
    for path, blob in [("small", small), ("dir/big", big), ("empty", b"")]:
        info = data.files.inspect(f"data@master:/{path}")
        assert (info.type, info.size) == ("file", len(blob))
        assert info.hash == blake3.blake3(blob).hexdigest()
    d = data.files.inspect("data@master:/dir")
    assert (d.type, d.size, d.path) == ("dir", len(big), "/dir")
    root = data.files.inspect("data@master")
    assert (root.path, root.type, root.size) == ("/", "dir", len(small) + len(big))


def test_diff_against_parent_and_between_commits(data: Pfs) -> None:
    c1 = _put(data, "data@master", "keep", b"k")
    _put(data, "data@master", "mod", b"v1")
    _put(data, "data@master", "gone/x", b"g")
    data.commits.start("data")
    _put(data, "data@master", "mod", b"v2")
    _put(data, "data@master", "new/y", b"n")
    data.files.delete("data@master", path="gone", recursive=True)
    c4 = data.commits.finish("data@master")

    changes = {d.path: d.change for d in data.files.diff("data@master")}
    assert changes == {"/mod": "modified", "/new/y": "added", "/gone/x": "removed"}
    (mod,) = [d for d in data.files.diff("data@master") if d.path == "/mod"]
    assert mod.old is not None and mod.new is not None
    assert mod.old.hash == blake3.blake3(b"v1").hexdigest()
    assert mod.new.hash == blake3.blake3(b"v2").hexdigest()

    between = {d.path: d.change for d in data.files.diff(f"data@{c4.id}", f"data@{c1.id}")}
    assert between == {"/mod": "added", "/new/y": "added"}
    assert data.files.diff("data@master", "data@master") == []
    assert {d.path for d in data.files.diff(f"data@{c1.id}")} == {"/keep"}


def test_delete_files_and_directories(data: Pfs) -> None:
    _put(data, "data@master", "d/a", b"1")
    _put(data, "data@master", "d/sub/b", b"2")
    _put(data, "data@master", "top", b"3")
    before = len(data.commits.list("data"))
    with pytest.raises(DirectoryNotEmpty):
        data.files.delete("data@master", path="d")
    with pytest.raises(NotFound):
        data.files.delete("data@master", path="nope")
    with pytest.raises(InvalidArgument):
        data.files.delete("data@master", path="/")
    assert len(data.commits.list("data")) == before  # refused deletes make no commit

    data.files.delete("data@master", path="top")
    data.files.delete("data@master", path="d", recursive=True)
    assert _ls(data, "data@master") == []
    assert data.commits.inspect("data@master").size == 0
    assert _ls(data, "data@master^^:/d") == ["/d/a", "/d/sub"]


def test_delete_empty_directory_without_recursive(data: Pfs, tmp_path: Path) -> None:
    (tmp_path / "src" / "empty").mkdir(parents=True)
    (tmp_path / "src" / "f").write_bytes(b"f")
    data.files.put("data@master", LocalPath(tmp_path / "src"))
    data.files.delete("data@master", path="empty")
    assert _ls(data, "data@master") == ["/f"]


def test_copy_of_a_directory_shares_everything(data: Pfs, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}").write_bytes(_random(20_000, seed=100 + i))
    data.files.put("data@master", LocalPath(src), path="in")
    packed = _pack_bytes(data)
    with data.store.meta.read() as txn:
        pages = txn.stat(data.store.meta.db["nodes"])["entries"]
    data.files.copy("data@master:/in", "data@master:/copy")
    assert data.files.inspect("data@master:/copy").hash == data.files.inspect(
        "data@master:/in"
    ).hash
    assert _pack_bytes(data) == packed
    with data.store.meta.read() as txn:
        assert txn.stat(data.store.meta.db["nodes"])["entries"] - pages <= 1  # a new root
    assert _cat(data, "data@master:/copy/f7") == _random(20_000, seed=107)
    assert data.commits.inspect("data@master").size == 2 * 50 * 20_000

    data.files.copy("data@master:/in/f3", "data@master:/single")
    assert _cat(data, "data@master:/single") == _random(20_000, seed=103)


def test_same_file_in_two_repos_is_stored_once(data: Pfs, tmp_path: Path) -> None:
    data.repos.create("other")
    src = tmp_path / "big"
    src.write_bytes(_random(2 << 20, seed=5))
    data.files.put("data@master", LocalPath(src), path="x")
    packed = _pack_bytes(data)
    assert packed >= 2 << 20
    data.files.put("other@master", LocalPath(src), path="elsewhere/y")
    _put(data, "other@master", "z", src.read_bytes())
    assert _pack_bytes(data) == packed
    assert data.files.inspect("other@master:/z").hash == data.files.inspect(
        "data@master:/x"
    ).hash


# -- read-only targets -------------------------------------------------------------------------


def test_writes_to_a_finished_commit_are_read_only(data: Pfs) -> None:
    c1 = _put(data, "data@master", "a", b"1")
    _put(data, "data@master", "b", b"2")
    for ref in [f"data@{c1.id}", f"data@{c1.id[:12]}", "data@master^"]:
        with pytest.raises(ReadOnly):
            _put(data, ref, "x", b"x")
        with pytest.raises(ReadOnly):
            data.files.delete(ref, path="a")
    assert _ls(data, f"data@{c1.id}") == ["/a"]
    assert len(data.commits.list("data")) == 2


def test_writes_to_an_open_commit_by_id_land(data: Pfs) -> None:
    opened = data.commits.start("data")
    _put(data, f"data@{opened.id}", "a", b"1")
    assert data.commits.inspect(f"data@{opened.id}").is_open
    data.commits.finish(f"data@{opened.id}")
    assert _ls(data, "data@master") == ["/a"]


def test_pipeline_repo_is_read_only_unless_system(pfs: Pfs) -> None:
    pfs.repos.create("out", kind="pipeline")
    with pytest.raises(ReadOnly):
        _put(pfs, "out@master", "a", b"1")
    with pytest.raises(ReadOnly):
        pfs.commits.start("out")
    assert pfs.commits.list("out") == []
    assert [(b.name, b.head, b.open) for b in pfs.repos.list_branches("out")] == [
        ("master", None, None)
    ]

    made = _put(pfs, "out@master", "a", b"1", system=True)
    assert _cat(pfs, "out@master:/a") == b"1"
    for attempt in [
        lambda: _put(pfs, "out@master", "b", b"2"),
        lambda: pfs.files.delete("out@master", path="a"),
        lambda: pfs.files.copy("out@master:/a", "out@master:/c"),
        lambda: pfs.commits.delete("out@master"),
    ]:
        with pytest.raises(ReadOnly):
            attempt()
    assert _ids(pfs.commits.list("out")) == [made.id]
    assert _ls(pfs, "out@master") == ["/a"]


# -- failing sources change nothing ------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _state(pfs: Pfs) -> tuple[object, ...]:
    commits = pfs.commits.list("data")
    branches = [(b.name, b.head, b.open) for b in pfs.repos.list_branches("data")]
    files = {f.path: f.hash for f in pfs.files.walk("data@master")} if commits else {}
    return _ids(commits), branches, files


@pytest.mark.parametrize("with_history", [False, True])
@pytest.mark.parametrize("source", ["missing-file", "closed-port"])
def test_failing_source_leaves_no_commit(
    data: Pfs, tmp_path: Path, source: str, with_history: bool
) -> None:
    if with_history:
        _put(data, "data@master", "a", b"1")
    before = _state(data)
    what: LocalPath | Url = LocalPath(tmp_path / "does-not-exist")
    if source == "closed-port":
        what = Url(f"http://127.0.0.1:{_closed_port()}/set1.txt")
    with pytest.raises(SourceError):
        data.files.put("data@master", what, path="x")
    assert _state(data) == before


def test_failing_source_inside_an_open_commit_changes_nothing(data: Pfs, tmp_path: Path) -> None:
    data.commits.start("data")
    _put(data, "data@master", "a", b"1")
    with pytest.raises(SourceError):
        data.files.put("data@master", LocalPath(tmp_path / "nope"), path="b")
    assert _ls(data, "data@master") == ["/a"]
    assert data.commits.inspect("data@master").is_open
    data.commits.finish("data@master")


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_puts_to_one_branch_all_land(data: Pfs) -> None:
    n = 8
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def writer(i: int) -> None:
        try:
            barrier.wait()
            for j in range(3):
                _put(data, "data@master", f"t{i}/f{j}", _random(50_000, seed=i * 10 + j))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    commits = data.commits.list("data", "master")
    assert len(commits) == 3 * n
    assert len(data.commits.list("data")) == 3 * n  # one chain: nothing lost on a side
    files = _tree(data, "data@master")
    assert files == {
        f"/t{i}/f{j}": _random(50_000, seed=i * 10 + j) for i in range(n) for j in range(3)
    }


def test_concurrent_identical_puts_all_land(data: Pfs) -> None:
    blob = _random(1 << 20, seed=6)
    threads = [
        threading.Thread(target=_put, args=(data, "data@master", f"copy{i}", blob))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _ls(data, "data@master") == [f"/copy{i}" for i in range(4)]
    assert all(_cat(data, f"data@master:/copy{i}") == blob for i in range(4))


# -- fsck --------------------------------------------------------------------------------------


def test_fsck_shares_work_between_commits(data: Pfs) -> None:
    seed = _put(data, "data@master", "seed", b"same bytes")
    digest = bytes.fromhex(data.files.inspect("data@master:/seed").hash)
    entry = Entry(KIND_FILE, 10, 0o644, 0, digest)
    assert seed.size == 10
    data.files.apply("data@master", {f"big/n{i:05}": entry for i in range(3000)})
    first = fsck(data)
    for i in range(20):
        _put(data, "data@master", f"big/n{i * 150:05}", str(i).encode())
    report = fsck(data, verify_data=True)
    assert report.ok, report.errors
    assert (report.repos, report.commits) == (1, 22)
    # 22 commits of a 3000-file directory: each later commit adds the few pages it rewrote.
    assert report.pages <= first.pages + 20 * 3
    assert report.files < 4 * 3000  # not 22 walks of 3000 files


def _snapshot(pfs: Pfs) -> dict[str, list[tuple[bytes, bytes]]]:
    with pfs.store.meta.read() as txn:
        return {
            name: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
            for name, db in pfs.store.meta.db.items()
        }


def test_fsck_changes_nothing(data: Pfs, tmp_path: Path) -> None:
    _put(data, "data@master", "a/b", _random(1 << 20, seed=7))
    data.commits.start("data")
    _put(data, "data@master", "c", b"open")
    before = _snapshot(data), sorted(os.listdir(data.store.root / "packs")), _pack_bytes(data)
    report = fsck(data, verify_data=True)
    assert report.ok and report.commits == 2 and report.files == 2 and report.chunks >= 3
    assert (_snapshot(data), sorted(os.listdir(data.store.root / "packs")),
            _pack_bytes(data)) == before
    data.commits.finish("data@master")


_enc = msgspec.msgpack.Encoder()


def _edit(pfs: Pfs, db: str, key: bytes, value: bytes | None) -> None:
    with pfs.store.meta.write() as txn:
        if value is None:
            assert txn.delete(key, db=pfs.store.meta.db[db])
        else:
            txn.put(key, value, db=pfs.store.meta.db[db])


def _commit(pfs: Pfs, commit_id: str) -> Commit:
    return pfs.commits.inspect(f"data@{commit_id}")


def _drop_subdir_page(pfs: Pfs, c: dict[str, str]) -> None:
    page = bytes.fromhex(pfs.files.inspect(f"data@{c['c2']}:/dir/sub").hash)
    _edit(pfs, "nodes", page, None)


def _drop_contents(pfs: Pfs, c: dict[str, str]) -> None:
    _edit(pfs, "contents", bytes.fromhex(pfs.files.inspect("data@master:/dir/sub/f").hash), None)


def _drop_chunk(pfs: Pfs, c: dict[str, str]) -> None:
    _edit(pfs, "chunks", bytes.fromhex(pfs.files.inspect("data@master:/dir/sub/f").hash), None)


def _head_to_open(pfs: Pfs, c: dict[str, str]) -> None:
    branch = pfs.repos.inspect_branch("data", "master")
    branch.head = c["open"]
    _edit(pfs, "branches", b"data\0master", _enc.encode(branch))


def _open_is_finished(pfs: Pfs, c: dict[str, str]) -> None:
    branch = pfs.repos.inspect_branch("data", "dev")
    branch.open = c["c1"]
    _edit(pfs, "branches", b"data\0dev", _enc.encode(branch))


def _drop_parent(pfs: Pfs, c: dict[str, str]) -> None:
    commit = _commit(pfs, c["c1"])
    _edit(pfs, "commits", c["c1"].encode(), None)
    _edit(pfs, "commit_log", b"data\0" + int(commit.started * 1e9).to_bytes(8, "big")
          + commit.id.encode(), None)


def _drop_log_row(pfs: Pfs, c: dict[str, str]) -> None:
    commit = _commit(pfs, c["c2"])
    _edit(pfs, "commit_log", b"data\0" + int(commit.started * 1e9).to_bytes(8, "big")
          + commit.id.encode(), None)


def _wrong_commit_size(pfs: Pfs, c: dict[str, str]) -> None:
    commit = _commit(pfs, c["c2"])
    commit.size += 1
    _edit(pfs, "commits", commit.id.encode(), _enc.encode(commit))


def _wrong_dir_size(pfs: Pfs, c: dict[str, str]) -> None:
    commit = _commit(pfs, c["c2"])
    with pfs.store.meta.read() as txn:
        root = pfs.store.trees.node(txn, bytes.fromhex(commit.root))
    assert isinstance(root, Leaf)
    entries = [
        msgspec.structs.replace(e, size=e.size + 5) if e.kind == KIND_DIR else e
        for e in root.entries
    ]
    raw = _enc.encode(Leaf(root.names, entries))
    digest = blake3.blake3(raw).digest()
    _edit(pfs, "nodes", digest, raw)
    commit.root, commit.size = digest.hex(), commit.size + 5
    _edit(pfs, "commits", commit.id.encode(), _enc.encode(commit))


def _repo_gone(pfs: Pfs, c: dict[str, str]) -> None:
    _edit(pfs, "repos", b"data", None)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_drop_subdir_page, ["{c2}:/dir/sub: tree page", "is missing"]),
        (_drop_contents, ["{c2}:/dir/sub/f: file content", "is missing"]),
        (_drop_chunk, ["dir/sub/f", "is not in the chunk index"]),
        (_head_to_open, ["branch data@master: head {open} is not finished"]),
        (_open_is_finished, ["branch data@dev: open commit {c1} is already finished"]),
        (_drop_parent, ["commit data@{c2}: its parent {c1} does not exist"]),
        (_drop_log_row, ["commit data@{c2}: has 0 commit_log rows"]),
        (_wrong_commit_size, ["commit data@{c2}: size"]),
        (_wrong_dir_size, ["{c2}:/dir: directory size"]),
        (_repo_gone, ["its repo data does not exist"]),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_fsck_finds_damage(
    tmp_path: Path, damage: Callable[[Pfs, dict[str, str]], None], expected: list[str]
) -> None:
    pfs = Pfs(tmp_path / "damaged")
    try:
        pfs.repos.create("data")
        c1 = _put(pfs, "data@master", "top", b"t")
        c2 = _put(pfs, "data@master", "dir/sub/f", b"some content")
        pfs.repos.create_branch("data", "dev", head=c1.id)
        opened = pfs.commits.start("data", "master")
        ids = {"c1": c1.id, "c2": c2.id, "open": opened.id}
        assert fsck(pfs, verify_data=True).ok
        damage(pfs, ids)
        errors = fsck(pfs, verify_data=True).errors
        assert errors, "fsck found nothing"
        for part in expected:
            assert any(part.format(**ids) in e for e in errors), (part, errors)
    finally:
        pfs.close()


def test_fsck_finds_a_misfiled_name_in_a_big_directory(tmp_path: Path) -> None:
    pfs = Pfs(tmp_path / "damaged")
    try:
        pfs.repos.create("data")
        _put(pfs, "data@master", "seed", b"s")
        entry = Entry(KIND_FILE, 1, 0o644, 0, blake3.blake3(b"s").digest())
        commit = pfs.files.apply("data@master", {f"big/n{i:04}": entry for i in range(1200)})
        assert fsck(pfs).ok
        with pfs.store.meta.read() as txn:
            trees = pfs.store.trees
            root = trees.node(txn, bytes.fromhex(commit.root))
            big = trees.find(txn, bytes.fromhex(commit.root), "big")
            assert isinstance(root, Leaf) and big is not None
            index = trees.node(txn, big.ref)
        assert isinstance(index, Inner) and len(index.keys) >= 3
        # Claim the second page starts earlier than it does: the names from there up to its
        # real start are misfiled (a lookup of them would go to the wrong page).
        keys = [*index.keys]
        keys[1] = keys[0] + "5"
        raw = _enc.encode(Inner(keys, index.children, index.sizes))
        page = blake3.blake3(raw).digest()
        _edit(pfs, "nodes", page, raw)
        entries = [msgspec.structs.replace(e, ref=page) if n == "big" else e
                   for n, e in zip(root.names, root.entries, strict=True)]
        raw = _enc.encode(Leaf(root.names, entries))
        new_root = blake3.blake3(raw).digest()
        _edit(pfs, "nodes", new_root, raw)
        commit.root = new_root.hex()
        _edit(pfs, "commits", commit.id.encode(), _enc.encode(commit))
        errors = fsck(pfs).errors
        assert len(errors) == 2, errors  # the page's own key, and the previous page's range
        assert all(f"data@{commit.id}:/big" in e for e in errors)
        assert any("index key" in e for e in errors)
        assert any("belongs after index key" in e for e in errors)
    finally:
        pfs.close()


def test_put_of_many_files_goes_through_reader_processes(
    data: Pfs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pfsmount.pfs.files as files_module

    monkeypatch.setattr(files_module, "POOL_MIN", 10)  # files of 2 MiB come back as Large
    top = tmp_path / "src"
    expect: dict[str, bytes] = {}
    for i in range(600):
        rel = f"d{i % 5}/f{i:03d}"
        expect[rel] = _random(i * 7 % 5000, seed=i) if i % 50 else _random(2 << 20, seed=i)
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(expect[rel])
    (top / "d1" / "f001").chmod(0o755)
    (top / "d0" / "nothing").write_bytes(b"")
    (top / "empty").mkdir()
    (top / "link").symlink_to("d1/f001")
    data.files.put("data@master", LocalPath(top), path="in")
    for rel, blob in expect.items():
        assert _cat(data, f"data@master:/in/{rel}") == blob, rel
    assert data.files.inspect("data@master:/in/d1/f001").mode == 0o755
    assert data.files.inspect("data@master:/in/d0/f000").size == 2 << 20
    assert data.files.inspect("data@master:/in/d0/nothing").hash == blake3.blake3(b"").hexdigest()
    assert data.files.inspect("data@master:/in/empty").type == "dir"
    assert data.files.inspect("data@master:/in/link").target == "d1/f001"
