"""``pfsmount.Client`` against a real daemon started with ``pfsmount up``: every method,
errors as the same classes the daemon raised, streamed listings, the socket's mode."""

from __future__ import annotations

import random
import stat
import threading
import time
from pathlib import Path

import blake3
import pytest

from pfsmount import Client
from pfsmount.api.wire import Branch, Commit, Counts, FileDiff, FileInfo, Repo
from pfsmount.errors import (
    AlreadyExists,
    Conflict,
    DaemonNotRunning,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    NotFound,
    ReadOnly,
    SourceError,
)


def test_socket_and_root_are_owner_only(pfsd, client: Client) -> None:
    status = client.status()
    sock = Path(status["socket"])
    assert sock == pfsd.root / "pfsmount.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(pfsd.root.stat().st_mode) == 0o700
    assert status["root"] == str(pfsd.root) and status["pid"] == pfsd.pid()
    assert abs(status["started"] - time.time()) < 600


def test_repos_and_branches(client: Client) -> None:
    repo = client.create_repo("api-repos", "described")
    assert isinstance(repo, Repo) and repo.name == "api-repos"
    assert repo.description == "described" and repo.kind == "input"
    assert "api-repos" in [r.name for r in client.list_repos()]
    assert client.inspect_repo("api-repos").size == 0

    first = client.put_file("api-repos@master:/a", b"12345")
    assert isinstance(first, Commit) and first.finished is not None
    assert client.inspect_repo("api-repos").size == 5
    second = client.put_file("api-repos@master:/b", b"678")
    dev = client.create_branch("api-repos", "dev", first.id)
    assert isinstance(dev, Branch) and dev.head == first.id
    assert {b.name: b.head for b in client.list_branches("api-repos")} == {
        "dev": first.id, "master": second.id}
    client.delete_branch("api-repos", "dev")
    assert [b.name for b in client.list_branches("api-repos")] == ["master"]

    client.delete_repo("api-repos")
    assert "api-repos" not in [r.name for r in client.list_repos()]
    with pytest.raises(NotFound):
        client.inspect_repo("api-repos")


def test_commits(client: Client) -> None:
    client.create_repo("api-commits")
    opened = client.start_commit("api-commits", "master", description="first")
    assert opened.finished is None and opened.parent is None
    assert client.put_file("api-commits@master:/x", b"x").id == opened.id
    # wait_commit blocks until another caller finishes the commit, then answers the output
    # commits downstream of it: none, as no pipeline reads this repo.
    waited: list[list[Commit]] = []
    waiter = threading.Thread(target=lambda: waited.append(
        Client(client.layout.root, timeout=60).wait_commit(f"api-commits@{opened.id}", 30)))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive(), "wait_commit returned while the commit was open"
    done = client.finish_commit("api-commits@master", description="finished")
    waiter.join(timeout=30)
    assert waited == [[]]
    assert done.description == "finished" and done.finished is not None
    assert client.inspect_commit("api-commits@master") == done

    c2 = client.put_file("api-commits@master:/y", b"y")
    c3 = client.put_file("api-commits@master:/z", b"z")
    assert [c.id for c in client.list_commits("api-commits")] == [c3.id, c2.id, opened.id]
    assert [c.id for c in client.list_commits("api-commits", "master", 2)] == [c3.id, c2.id]
    child = client.squash_commit(f"api-commits@{c2.id}")
    assert child.id == c3.id
    assert client.inspect_commit(f"api-commits@{c3.id}").parent == opened.id
    assert client.delete_commit("api-commits@master").id == c3.id
    assert client.inspect_commit("api-commits@master").id == opened.id
    assert client.wait_commit("api-commits@master", timeout=5) == []
    with pytest.raises(Conflict):
        client.wait_commit(f"api-commits@{client.start_commit('api-commits').id}", timeout=0.5)
    client.delete_commit("api-commits@master")  # the open one


def test_files(client: Client, tmp_path: Path, web) -> None:
    base_url, served = web
    client.create_repo("api-files")
    local = tmp_path / "local.bin"
    local.write_bytes(random.Random(2).randbytes(700_000))
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "one.txt").write_text("one\n")
    (tree / "two.txt").write_text("two\n")
    (served / "remote.txt").write_text("from the web\n")

    seen: list[Counts] = []
    client.start_commit("api-files", "master")
    client.put_file("api-files@master:/local.bin", local, progress=seen.append)
    assert seen and seen[-1].bytes == 700_000 and seen[-1].files == 1
    client.put_file("api-files@master:/tree", tree)
    client.put_file("api-files@master:/web.txt", f"{base_url}/remote.txt")
    client.put_file("api-files@master:/bytes", b"abc")
    client.put_file("api-files@master:/stream", iter([b"chunk1-", b"chunk2"]))
    client.put_file("api-files@master:/bytes", b"def", append=True)
    client.put_file("api-files@master", b"under a path argument", path="/named")
    commit = client.finish_commit("api-files@master")

    assert client.read_file("api-files@master:/local.bin") == local.read_bytes()
    assert client.read_file("api-files@master:/web.txt") == b"from the web\n"
    assert client.read_file("api-files@master:/bytes") == b"abcdef"
    assert client.read_file("api-files@master:/stream") == b"chunk1-chunk2"
    assert client.read_file("api-files@master:/named") == b"under a path argument"
    assert b"".join(client.get_file("api-files@master:/local.bin", offset=1000, size=5)) == \
        local.read_bytes()[1000:1005]

    info = client.inspect_file("api-files@master:/local.bin")
    assert isinstance(info, FileInfo) and info.commit == commit.id
    assert info.hash == blake3.blake3(local.read_bytes()).hexdigest()
    assert [f.path for f in client.list_files("api-files@master")] == [
        "/bytes", "/local.bin", "/named", "/stream", "/tree", "/web.txt"]
    assert [f.path for f in client.walk_files("api-files@master:/tree")] == [
        "/tree/sub/one.txt", "/tree/two.txt"]
    assert sorted(f.path for f in client.glob_files("api-files@master", "**/*.txt")) == [
        "/tree/sub/one.txt", "/tree/two.txt", "/web.txt"]

    counts = client.export("api-files@master:/tree", tmp_path / "out")
    assert (counts.files, counts.bytes) == (2, 8)
    assert (tmp_path / "out" / "sub" / "one.txt").read_text() == "one\n"

    copied = client.copy_file("api-files@master:/tree", "api-files@master:/tree2")
    assert copied.parent == commit.id
    deleted = client.delete_file("api-files@master:/tree", recursive=True)
    diff = client.diff_files("api-files@master", f"api-files@{commit.id}")
    assert all(isinstance(d, FileDiff) for d in diff)
    assert sorted((d.change, d.path) for d in diff) == [
        ("added", "/tree2/sub/one.txt"), ("added", "/tree2/two.txt"),
        ("removed", "/tree/sub/one.txt"), ("removed", "/tree/two.txt")]
    assert deleted.id == client.inspect_commit("api-files@master").id

    report = client.fsck(verify=True)
    assert report.errors == [] and report.repos >= 1 and report.files >= 1


def test_export_of_a_directory_is_refused_unless_recursive(client: Client,
                                                            tmp_path: Path) -> None:
    client.create_repo("export-dir")
    client.put_file("export-dir@master:/d/f", b"x")
    with pytest.raises(InvalidArgument, match="/d is a directory"):
        client.export("export-dir@master:/d", tmp_path / "out", recursive=False)
    assert not (tmp_path / "out").exists()
    assert client.export("export-dir@master:/d/f", tmp_path / "f", recursive=False).files == 1
    assert client.export("export-dir@master:/d", tmp_path / "out").files == 1
    assert (tmp_path / "out" / "f").read_bytes() == b"x"


def test_errors_come_back_as_their_classes(pfsd, client: Client, no_daemon) -> None:
    client.create_repo("api-errors")
    first = client.put_file("api-errors@master:/dir/f", b"x")
    with pytest.raises(NotFound, match="repo nope not found"):
        client.list_commits("nope")
    with pytest.raises(NotFound):
        client.read_file("api-errors@master:/missing")
    with pytest.raises(NotFound):  # a listing fails before its first line
        list(client.list_files("api-errors@master:/missing"))
    with pytest.raises(InvalidArgument, match="invalid repo name"):
        client.create_repo("no/slashes")
    with pytest.raises(InvalidArgument, match="invalid"):
        client.inspect_commit("api-errors@@x")
    with pytest.raises(InvalidArgument, match="invalid reference"):
        client.inspect_commit("api-errors@master:relative")
    with pytest.raises(InvalidArgument):
        client.put_file("api-errors@master:/../x", b"x")
    with pytest.raises(AlreadyExists):
        client.create_repo("api-errors")
    with pytest.raises(ReadOnly):
        client.put_file(f"api-errors@{first.id}:/x", b"x")
    with pytest.raises(Conflict, match="no open commit"):
        client.finish_commit("api-errors@master")
    with pytest.raises(IsADirectory):
        client.read_file("api-errors@master:/dir")
    with pytest.raises(DirectoryNotEmpty):
        client.delete_file("api-errors@master:/dir")
    with pytest.raises(SourceError):
        client.put_file("api-errors@master:/u", "http://127.0.0.1:9/nothing")
    with pytest.raises(DaemonNotRunning, match="pfsmount up"):
        Client(no_daemon.root).list_repos()
    with pytest.raises(DaemonNotRunning):
        list(Client(no_daemon.root).list_files("x@master"))
    assert [c.id for c in client.list_commits("api-errors")] == [first.id]


def test_a_20000_entry_directory_streams_and_pages(client: Client, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(20_000):
        (big / f"f{i:05d}").write_bytes(b"%d" % i)
    client.create_repo("api-big")
    client.put_file("api-big@master:/d", big)
    names = [f"/d/f{i:05d}" for i in range(20_000)]

    # The first entry arrives long before the listing ends, and a limited listing does not
    # pay for the whole directory (best of three tries, to ride out a busy machine).
    first_ratio = limit_ratio = 1.0
    for _ in range(3):
        start = time.monotonic()
        entries = client.list_files("api-big@master:/d")
        head = next(entries)
        to_first = time.monotonic() - start
        everything = [head.path, *(f.path for f in entries)]
        total = time.monotonic() - start
        assert everything == names
        start = time.monotonic()
        first = [f.path for f in client.list_files("api-big@master:/d", limit=10)]
        limited = time.monotonic() - start
        assert first == names[:10]
        first_ratio = min(first_ratio, to_first / total)
        limit_ratio = min(limit_ratio, limited / total)
    assert first_ratio < 1 / 3 and limit_ratio < 1 / 3, (first_ratio, limit_ratio)

    pages: list[str] = []
    after = None
    while True:
        page = [f.path for f in client.list_files("api-big@master:/d", after=after,
                                                  limit=7000)]
        if not page:
            break
        assert len(page) <= 7000
        pages += page
        after = page[-1].rsplit("/", 1)[1]
    assert pages == names
    assert [f.path for f in client.list_files("api-big@master:/d", after="f19998")] == [
        "/d/f19999"]


def test_shutdown_stops_the_daemon(fresh_pfsd) -> None:
    with Client(fresh_pfsd.root) as c:
        pid = c.status()["pid"]
        c.create_repo("before-shutdown")
        c.shutdown()
    deadline = time.monotonic() + 15
    while (fresh_pfsd.root / "pfsmount.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(DaemonNotRunning), Client(fresh_pfsd.root) as c:
        c.status()
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the daemon outlived its shutdown"
    # Up again (the fixture's teardown checks it with fsck and stops it): data is still there.
    fresh_pfsd.up()
    with Client(fresh_pfsd.root) as c:
        assert [r.name for r in c.list_repos()] == ["before-shutdown"]


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
