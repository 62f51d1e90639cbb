"""Pachyderm 1.x commit references, ``branch/N``: the N-th commit of a branch's history from
0, in the versioning model itself (every reader and writer resolves through it)."""

from __future__ import annotations

import pytest

from pfsmount.errors import InvalidArgument, NotFound, ReadOnly
from pfsmount.pfs import Commit, Pfs
from pfsmount.pfs.files import Data
from pfsmount.pfs.refs import Ref, parse_ref

CID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("text", "expected"), [
    ("data/master/0", Ref("data", "master/0", 0, "")),
    ("data@master/12", Ref("data", "master/12", 0, "")),
    ("data/dev-2.x/3^:/a/b", Ref("data", "dev-2.x/3", 1, "a/b")),
])
def test_parse_branch_n(text: str, expected: Ref) -> None:
    assert parse_ref(text) == expected


@pytest.mark.parametrize(("text", "match"), [
    (f"data@{CID}/1", "must be a branch, not a commit id"),
    ("data/master/x", "invalid branch name"),
    ("data/master/1/2", "invalid branch name"),
    ("data/.hidden/1", "invalid branch name"),
])
def test_bad_branch_n(text: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        parse_ref(text)


def put(pfs: Pfs, ref: str, data: bytes) -> Commit:
    return pfs.files.put(ref, Data(data))


def cat(pfs: Pfs, ref: str) -> bytes:
    _, entry = pfs.files.open(ref)
    return b"".join(pfs.files.read(entry))


def test_branch_n_counts_the_history_from_0(pfs: Pfs) -> None:
    pfs.repos.create("data")
    ids = [put(pfs, "data@master:/f", f"v{n}".encode()).id for n in range(3)]
    for n, commit_id in enumerate(ids):
        assert pfs.commits.inspect(f"data/master/{n}").id == commit_id
        assert cat(pfs, f"data@master/{n}:/f") == f"v{n}".encode()
    assert pfs.commits.inspect("data@master/2~2").id == ids[0]
    # a branch made at master/1 counts master/0, master/1, then its own
    pfs.repos.create_branch("data", "dev", ids[1])
    dev = put(pfs, "data@dev:/f", b"dev").id
    assert [pfs.commits.inspect(f"data/dev/{n}").id for n in range(3)] == [*ids[:2], dev]
    # an open commit is the last one, as 1.x numbered it
    opened = pfs.commits.start("data", "master")
    assert pfs.commits.inspect("data/master/3").id == opened.id
    with pytest.raises(NotFound, match=r"data/master/4 not found: branch master has 4 "
                                       r"commits \(master/0 to master/3\)"):
        pfs.commits.inspect("data/master/4")
    with pytest.raises(NotFound, match="branch nope not found"):
        pfs.commits.inspect("data/nope/0")
    # a finished commit named so is read-only; the open one takes writes
    with pytest.raises(ReadOnly):
        put(pfs, "data@master/0:/g", b"x")
    assert put(pfs, "data@master/3:/g", b"x").id == opened.id
    with pytest.raises(NotFound):
        put(pfs, "data@master/9:/g", b"x")
    assert [b.name for b in pfs.repos.list_branches("data")] == ["dev", "master"]
