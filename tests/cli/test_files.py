"""``pfsmount file ...`` and the 1.x ``put-file``/``get-file``/``list-file``, as a user runs them.

Puts come from a file, stdin, a directory tree and a real HTTP server on 127.0.0.1; gets go
to stdout, a file and a directory, which is compared byte for byte with what was put.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import blake3

ID = r"[0-9a-f]{32}"


def commit_of(out: str, repo: str) -> str:
    """The commit id a put printed (``repo@id``)."""
    m = re.fullmatch(rf"{re.escape(repo)}@({ID})\n", out)
    assert m, out
    return m.group(1)


def names(out: str) -> list[str]:
    """The NAME column of a printed file table."""
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def snapshot(top: Path) -> dict[str, tuple[str, bytes | str | None, int]]:
    """Everything below ``top``: relative path -> (kind, bytes or link target, exec bit)."""
    found: dict[str, tuple[str, bytes | str | None, int]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = str(full.relative_to(top))
            if full.is_symlink():
                found[rel] = ("link", os.readlink(full), 0)
            elif full.is_dir():
                found[rel] = ("dir", None, 0)
            else:
                found[rel] = ("file", full.read_bytes(), full.stat().st_mode & 0o100)
    return found


def test_put_from_a_file_and_stdin_then_get_to_stdout_and_a_file(pfsd, repo, examples,
                                                                   tmp_path: Path) -> None:
    set1 = (examples / "set1.txt").read_bytes()
    c1 = commit_of(pfsd.ok("file", "put", f"{repo}@master:/sales", examples / "set1.txt"),
                   repo)
    assert pfsd.get("file", "get", f"{repo}@master:/sales") == set1

    blob = random.Random(7).randbytes(200_000) + b"\0\n\r\n"
    c2 = commit_of(pfsd.ok("file", "put", f"{repo}@master:/dir/blob.bin", "-f", "-",
                           input=blob), repo)
    assert c2 != c1
    out = tmp_path / "copy.bin"
    assert pfsd.ok("file", "get", f"{repo}@master:/dir/blob.bin", "-o", out) == ""
    assert out.read_bytes() == blob
    assert pfsd.get("file", "get", f"{repo}@{c1}:/sales") == set1
    # One put, one commit.
    assert [c["id"] for c in pfsd.json("commit", "list", repo)] == [c2, c1]


def test_put_a_directory_tree_and_get_it_back_byte_for_byte(pfsd, repo,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b" / "c").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "top.txt").write_text("top\n")
    (src / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (src / "a" / "big.bin").write_bytes(random.Random(1).randbytes(3 << 20))
    (src / "a" / "zero").write_bytes(b"")
    (src / "a" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "a" / "run.sh").chmod(0o755)
    (src / "a" / "link").symlink_to("../top.txt")

    out = pfsd.ok("file", "put", "-r", f"{repo}@master:/in", src)
    commit_of(out, repo)
    assert names(pfsd.ok("file", "list", f"{repo}@master:/in")) == ["/in/a/", "/in/empty/",
                                                                    "/in/top.txt"]
    listed = {f["path"]: f for f in pfsd.json("file", "list", f"{repo}@master:/in/a")}
    assert listed["/in/a/link"]["type"] == "symlink"
    assert listed["/in/a/link"]["target"] == "../top.txt"
    assert listed["/in/a/big.bin"]["size"] == 3 << 20
    assert listed["/in/a/run.sh"]["mode"] & 0o111
    assert listed["/in/a/b"]["type"] == "dir"

    dest = tmp_path / "dest"
    assert pfsd.ok("file", "get", "-r", "-o", dest, f"{repo}@master:/in") == ""
    assert snapshot(dest) == snapshot(src)

    # A single file of the tree, to stdout and through a symlink's own entry.
    assert pfsd.get("file", "get", f"{repo}@master:/in/a/b/c/deep.txt") == b"deep\n"
    # -r without -o, and a directory without -r, are one-line errors.
    pfsd.fails("file", "get", "-r", f"{repo}@master:/in", code=2)
    pfsd.fails("file", "get", f"{repo}@master:/in", match="is a directory")


def test_put_from_a_url(pfsd, repo, web) -> None:
    base, served = web
    data = random.Random(3).randbytes(1 << 20)
    (served / "data.bin").write_bytes(data)
    (served / "sales.csv").write_text("apple,1\n")

    out = pfsd.ok("file", "put", f"{repo}@master:/web/data.bin", f"{base}/data.bin")
    commit_of(out, repo)
    assert pfsd.get("file", "get", f"{repo}@master:/web/data.bin") == data
    # 1.x: put-file with a URL and no path names the file after the URL.
    pfsd.ok("put-file", repo, "master", "-c", "-f", f"{base}/sales.csv")
    assert pfsd.get("get-file", repo, "master", "sales.csv") == b"apple,1\n"


def test_append_adds_to_the_end_in_a_new_commit(pfsd, repo) -> None:
    c1 = commit_of(pfsd.ok("file", "put", f"{repo}@master:/log", "-", input="one\n"), repo)
    c2 = commit_of(pfsd.ok("file", "put", "--append", f"{repo}@master:/log", "-",
                           input="two\n"), repo)
    c3 = commit_of(pfsd.ok("file", "put", "-a", f"{repo}/master:/new", "-", input="x"), repo)
    assert pfsd.get("file", "get", f"{repo}@master:/log") == b"one\ntwo\n"
    assert pfsd.get("file", "get", f"{repo}@{c1}:/log") == b"one\n"
    assert pfsd.get("file", "get", f"{repo}@master:/new") == b"x"
    assert [c["id"] for c in pfsd.json("commit", "list", repo)] == [c3, c2, c1]
    # Without --append a put replaces.
    pfsd.ok("file", "put", f"{repo}@master:/log", "-", input="fresh\n")
    assert pfsd.get("file", "get", f"{repo}@master:/log") == b"fresh\n"


def test_list_glob_and_inspect(pfsd, client, repo) -> None:
    big = random.Random(5).randbytes(3 << 20)  # spans several chunks
    commit = client.start_commit(repo, "master").id
    client.put_file(f"{repo}@master:/data/big.bin", big)
    client.put_file(f"{repo}@master:/data/2024/jan.csv", b"jan\n")
    client.put_file(f"{repo}@master:/data/2024/feb.csv", b"feb!\n")
    client.put_file(f"{repo}@master:/readme.md", b"# hi\n")
    client.finish_commit(f"{repo}@master")

    out = pfsd.ok("file", "list", f"{repo}@master")
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "SIZE"]
    assert [line.split() for line in out.splitlines()[1:]] == [
        ["/data/", "dir", "3.000", "MiB"], ["/readme.md", "file", "5", "B"]]
    doc = pfsd.json("file", "list", f"{repo}@master:/data/2024")
    assert [(f["path"], f["type"], f["size"]) for f in doc] == [
        ("/data/2024/feb.csv", "file", 5), ("/data/2024/jan.csv", "file", 4)]
    assert all(f["commit"] == commit for f in doc)
    # Listing a file lists the file itself.
    assert names(pfsd.ok("file", "list", f"{repo}@master:/readme.md")) == ["/readme.md"]

    assert names(pfsd.ok("file", "glob", f"{repo}@master", "data/*/*.csv")) == [
        "/data/2024/feb.csv", "/data/2024/jan.csv"]
    assert [f["path"] for f in pfsd.json("file", "glob", f"{repo}@master", "**/*.csv")] == [
        "/data/2024/feb.csv", "/data/2024/jan.csv"]
    assert names(pfsd.ok("file", "glob", f"{repo}@master", "*")) == ["/data/", "/readme.md"]
    assert pfsd.ok("file", "glob", f"{repo}@master", "nothing*").splitlines()[1:] == []

    out = pfsd.ok("file", "inspect", f"{repo}@master:/data/big.bin")
    assert re.search(r"^Path:\s+/data/big\.bin$", out, re.M), out
    assert re.search(r"^Type:\s+file$", out, re.M), out
    assert re.search(r"^Size:\s+3\.000 MiB$", out, re.M), out
    assert re.search(rf"^Hash:\s+{blake3.blake3(big).hexdigest()}$", out, re.M), out
    assert re.search(rf"^Commit:\s+{commit}$", out, re.M), out
    doc = pfsd.json("file", "inspect", f"{repo}@master:/data/2024/jan.csv")
    assert doc["hash"] == blake3.blake3(b"jan\n").hexdigest()
    assert doc["size"] == 4 and doc["type"] == "file" and doc["mode"] == 0o644


def test_diff_against_the_parent_and_between_two_refs(pfsd, client, repo) -> None:
    client.start_commit(repo, "master")
    client.put_file(f"{repo}@master:/same", b"same")
    client.put_file(f"{repo}@master:/changed", b"old")
    client.put_file(f"{repo}@master:/gone", b"bye")
    first = client.finish_commit(f"{repo}@master").id
    client.start_commit(repo, "master")
    client.put_file(f"{repo}@master:/changed", b"newer")
    client.delete_file(f"{repo}@master:/gone")
    client.put_file(f"{repo}@master:/sub/added", b"hello")
    second = client.finish_commit(f"{repo}@master").id

    out = pfsd.ok("file", "diff", f"{repo}@master")
    assert sorted(line.split()[:2] for line in out.splitlines()) == [
        ["+", "/sub/added"], ["-", "/gone"], ["~", "/changed"]]
    doc = {d["path"]: d for d in pfsd.json("file", "diff", f"{repo}@{second}", f"{repo}@{first}")}
    assert doc["/changed"]["change"] == "modified"
    assert doc["/changed"]["old"]["size"] == 3 and doc["/changed"]["new"]["size"] == 5
    assert doc["/gone"]["change"] == "removed" and doc["/gone"]["new"] is None
    assert doc["/sub/added"]["change"] == "added" and doc["/sub/added"]["old"] is None
    assert set(doc) == {"/changed", "/gone", "/sub/added"}
    # Swapped, every change reads the other way round.
    out = pfsd.ok("file", "diff", f"{repo}@master^", f"{repo}@master")
    assert sorted(line.split()[:2] for line in out.splitlines()) == [
        ["+", "/gone"], ["-", "/sub/added"], ["~", "/changed"]]
    # The first commit against nothing: everything is added.
    out = pfsd.ok("file", "diff", f"{repo}@{first}")
    assert sorted(line.split()[:2] for line in out.splitlines()) == [
        ["+", "/changed"], ["+", "/gone"], ["+", "/same"]]


def test_delete_and_copy(pfsd, client, repo) -> None:
    client.start_commit(repo, "master")
    client.put_file(f"{repo}@master:/dir/a", b"A")
    client.put_file(f"{repo}@master:/dir/sub/b", b"B")
    client.put_file(f"{repo}@master:/file", b"F")
    client.finish_commit(f"{repo}@master")

    pfsd.ok("file", "copy", f"{repo}@master:/file", f"{repo}@master:/file2")
    pfsd.ok("file", "copy", f"{repo}@master:/dir", f"{repo}@master:/dir2")
    assert pfsd.get("file", "get", f"{repo}@master:/dir2/sub/b") == b"B"
    assert client.read_file(f"{repo}@master:/file2") == b"F"
    # Copies across repos too (content is shared, nothing is re-read).
    other = f"{repo}-other"
    client.create_repo(other)
    pfsd.ok("file", "copy", f"{repo}@master:/dir/a", f"{other}@master:/from-{repo}")
    assert client.read_file(f"{other}@master:/from-{repo}") == b"A"

    pfsd.ok("file", "delete", f"{repo}@master:/file")
    pfsd.fails("file", "delete", f"{repo}@master:/dir", code=5, match="use -r")
    pfsd.ok("file", "delete", "-r", f"{repo}@master:/dir")
    assert names(pfsd.ok("file", "list", f"{repo}@master")) == ["/dir2/", "/file2"]
    # Each command made one commit: 1 setup + 2 copies + 2 deletes.
    assert len(client.list_commits(repo)) == 5
    client.delete_repo(other)


def test_every_reference_form(pfsd, client, repo) -> None:
    first = client.put_file(f"{repo}@master:/dir/f", b"v1").id
    second = client.put_file(f"{repo}@master:/dir/f", b"v2").id
    assert pfsd.get("file", "get", f"{repo}/master:/dir/f") == b"v2"
    assert pfsd.get("file", "get", f"{repo}@master:/dir/f") == b"v2"
    assert pfsd.get("file", "get", f"{repo}@{first}:/dir/f") == b"v1"
    assert pfsd.get("file", "get", f"{repo}/{second}:/dir/f") == b"v2"
    assert pfsd.get("file", "get", f"{repo}@master^:/dir/f") == b"v1"
    assert pfsd.get("file", "get", f"{repo}@{second[:10]}:/dir/f") == b"v2"
    assert pfsd.get("file", "get", f"{repo}@master:/./dir//f") == b"v2"
    assert pfsd.get("get-file", repo, first, "dir/f") == b"v1"
    assert pfsd.get("get-file", repo, "master", "/dir/f") == b"v2"
    # No path means the root; a branch with no "@" part means master.
    assert names(pfsd.ok("file", "list", f"{repo}@master")) == ["/dir/"]
    assert names(pfsd.ok("file", "list", f"{repo}:/dir")) == ["/dir/f"]
    assert json.loads(pfsd.ok("list-file", repo, "master^", "dir", "--json"))[0]["size"] == 2
    assert pfsd.json("commit", "inspect", f"{repo}@master^")["id"] == first


def test_1x_put_file_appends_in_one_commit_each(pfsd, repo, examples) -> None:
    set1 = (examples / "set1.txt").read_bytes()
    set2 = (examples / "set2.txt").read_bytes()
    pfsd.ok("put-file", repo, "master", "sales", "-c", "-f", examples / "set1.txt")
    pfsd.ok("put-file", repo, "master", "sales", "-c", "-f", examples / "set2.txt")
    assert len(pfsd.json("list-commit", repo)) == 2
    assert pfsd.get("get-file", repo, "master", "sales") == set1 + set2
    out = pfsd.ok("list-file", repo, "master")
    assert [line.split() for line in out.splitlines()[1:]] == [
        ["/sales", "file", "3.390", "KiB"]]
    # --overwrite is the 2.x meaning: replace.
    pfsd.ok("put-file", repo, "master", "sales", "-c", "-o", "-f", examples / "set2.txt")
    assert pfsd.get("get-file", repo, "master", "sales") == set2
    assert len(pfsd.json("list-commit", repo)) == 3


def test_get_to_a_file_fails_cleanly_and_leaves_nothing_behind(pfsd, client, repo,
                                                               tmp_path: Path) -> None:
    client.put_file(f"{repo}@master:/dir/f", b"data")
    out = tmp_path / "out"
    # An unknown file, and a directory without -r: nothing is written.
    pfsd.fails("file", "get", f"{repo}@master:/nope", "-o", out, code=3, match="not found")
    pfsd.fails("file", "get", f"{repo}@master:/dir", "-o", out, match="is a directory")
    assert not out.exists()
    # A directory in the way of a file: one line naming it; no temporary file is left.
    out.mkdir()
    pfsd.fails("file", "get", f"{repo}@master:/dir/f", "-o", out,
               match=f"cannot write {re.escape(str(out))}: Is a directory")
    assert list(tmp_path.iterdir()) == [out] and list(out.iterdir()) == []
    # A place the daemon may not write to.
    pfsd.fails("file", "get", f"{repo}@master:/dir/f", "-o", "/proc/pfsmount-test",
               match="cannot write /proc/pfsmount-test")
    assert pfsd.ok("file", "get", f"{repo}@master:/dir/f", "-o", out / "f") == ""
    assert (out / "f").read_bytes() == b"data"
    assert "Traceback" not in pfsd.log_text()
