"""The 1.x spellings the seed uses, beyond its walkthrough (tests/e2e/test_seed): 1.x commit
references ``BRANCH/N`` in every form that takes a reference, ``put-file ... -c`` reading
stdin, ``get-logs --job``, and ``create-job`` refusing a bad spec. Every bad input is one line,
a non-zero exit, and changes nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfsmount import Client
from tests.conftest import Pfsmount


def rows(out: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[1:] if line.strip()]


@pytest.fixture
def unchanged(client: Client) -> Iterator[None]:
    """Repos, branches and commits (and jobs) are the same after the test as before."""
    def state() -> object:
        return [(r.name, r.size, [(b.name, b.head, b.open) for b in client.list_branches(r.name)],
                 [c.id for c in client.list_commits(r.name)]) for r in client.list_repos()]

    before = state()
    yield
    assert state() == before, "a failed command changed something"


def test_put_file_reads_stdin_without_f(pfsd: Pfsmount, repo: str) -> None:
    """1.x: ``put-file REPO BRANCH PATH -c`` with no ``-f`` appends stdin, a commit each."""
    assert re.fullmatch(rf"{repo}@[0-9a-f]{{32}}\n",
                        pfsd.ok("put-file", repo, "master", "sales", "-c", input="apple 1\n"))
    pfsd.ok("put-file", repo, "master", "sales", "-c", input="pear 2\n")
    assert pfsd.get("get-file", repo, "master", "sales") == b"apple 1\npear 2\n"
    assert pfsd.get("get-file", repo, "master/0", "sales") == b"apple 1\n"
    assert [r[:3] for r in rows(pfsd.ok("list-commit", repo))] == [
        ["master", f"{repo}/master/1", "master/0"], ["master", f"{repo}/master/0", "<none>"]]


def test_branch_n_in_every_reference(pfsd: Pfsmount, client: Client, repo: str) -> None:
    ids = [client.put_file(f"{repo}@master:/f", f"v{n}\n".encode()).id for n in range(3)]
    client.create_branch(repo, "dev", ids[0])
    dev = client.put_file(f"{repo}@dev:/f", b"dev\n").id
    for n, commit_id in enumerate(ids):
        assert pfsd.get("get-file", repo, f"master/{n}", "f") == f"v{n}\n".encode()
        assert pfsd.json("inspect-commit", repo, f"master/{n}")["id"] == commit_id
        assert pfsd.get("file", "get", f"{repo}/master/{n}:/f") == f"v{n}\n".encode()
        assert pfsd.get("file", "get", f"{repo}@master/{n}:/f") == f"v{n}\n".encode()
    assert pfsd.get("file", "get", f"{repo}@master/2^:/f") == b"v1\n"
    assert [r[0] for r in rows(pfsd.ok("list-file", repo, "master/1"))] == ["/f"]
    # dev's history is master/0 then its own commit: dev/0 is master/0, dev/1 is new
    assert [r[:3] for r in rows(pfsd.ok("list-commit", repo, "dev"))] == [
        ["dev", f"{repo}/dev/1", "master/0"], ["master", f"{repo}/master/0", "<none>"]]
    assert pfsd.json("inspect-commit", repo, "dev/1")["id"] == dev
    out = pfsd.ok("inspect-commit", repo, dev)
    assert re.search(rf"^1\.x id:\s+{repo}/dev/1$", out, re.M), out
    # every id list-commit prints is taken back
    for row in rows(pfsd.ok("list-commit", repo)):
        at = row[1].split("/", 1)[1]
        assert pfsd.json("inspect-commit", repo, at)["repo"] == repo
    assert pfsd.json("flush-commit", f"{repo}/master/1") == []


@pytest.mark.parametrize(("args", "code", "match"), [
    (["get-file", "{repo}", "master/3", "f"], 3,
     r"commit {repo}/master/3 not found: branch master has 1 commit \(master/0 to master/0\)$"),
    (["inspect-commit", "{repo}", "nobranch/0"], 3, "branch nobranch not found"),
    (["inspect-commit", "{repo}", "0123456789abcdef0123456789abcdef/0"], 2,
     "must be a branch, not a commit id"),
    (["flush-commit", "{repo}/master/9"], 3, "master/9 not found"),
    (["put-file", "{repo}", "master/0", "g", "-f", "-"], 6, "finished and read-only"),
    (["put-file", "{repo}", "master/4", "g", "-f", "-"], 3, "master/4 not found"),
    (["put-file", "{repo}", "master", "-c"], 2, "needs a PATH"),
    (["get-logs"], 2, "needs --pipeline NAME or --job ID"),
    (["get-logs", "--job", "0123456789abcdef0123456789abcdef"], 3, "not found"),
])
def test_bad_1x_references(pfsd: Pfsmount, client: Client, repo: str, args: list[str],
                           code: int, match: str) -> None:
    client.put_file(f"{repo}@master:/f", b"x\n")
    before = [c.id for c in client.list_commits(repo)]
    pfsd.fails(*(a.format(repo=repo) for a in args), code=code, match=match.format(repo=repo),
               input=b"data\n")
    assert [c.id for c in client.list_commits(repo)] == before
    assert [b.name for b in client.list_branches(repo)] == ["master"]


def job(inputs: list[dict[str, object]], **extra: object) -> str:
    return json.dumps({"transform": {"cmd": ["sh"], "stdin": ["true"]}, "inputs": inputs,
                       **extra})


def commit(repo: str, at: str) -> dict[str, object]:
    return {"commit": {"repo": {"name": repo}, "id": at}}


def test_create_job_refuses_a_bad_spec(pfsd: Pfsmount, client: Client, repo: str,
                                       tmp_path: Path) -> None:
    client.put_file(f"{repo}@master:/f", b"x\n")
    client.start_commit(repo, "open")
    bad = [
        (job([commit(repo, "master/1")]), 3, rf"commit {repo}/master/1 not found"),
        (job([commit("nope", "master/0")]), 3, "repo nope not found"),
        (job([commit(repo, "open")]), 5, "is open; finish it first"),
        (job([{**commit(repo, "master/0"), "lazy": True}]), 2,
         r"spec field inputs\[0\]\.lazy is not supported"),
        (job([commit(repo, "master/0")], pipeline={"name": "p"}), 2, "use create-pipeline"),
        (job([commit(repo, "master/0")], service={"internal_port": 8888}), 2,
         "service is not supported.*pfsmount notebook"),
        (job([commit(repo, "master/0"), commit(repo, "master/0")]), 2, "share a name"),
        (job([{**commit(repo, "master/0"), "name": "out"}]), 2, "reserved for /pfs/out"),
        (job([commit(repo, "master/0")], transform={"cmd": ["true"], "overwrite": True}), 2,
         "overwrite has no meaning"),
        (job([]), 2, "inputs"),
        ('{"transform": {"cmd": ["true"]}', 2, "not valid JSON"),
    ]
    jobs_before = pfsd.json("list-job")
    repos_before = [r.name for r in client.list_repos()]
    for n, (text, code, match) in enumerate(bad):
        spec = tmp_path / f"bad{n}.json"
        spec.write_text(text)
        pfsd.fails("create-job", "-f", spec, code=code, match=match)
    assert pfsd.json("list-job") == jobs_before
    assert [r.name for r in client.list_repos()] == repos_before


def test_create_job_takes_the_id_list_commit_prints(pfsd: Pfsmount, client: Client, repo: str,
                                                    tmp_path: Path) -> None:
    """``REPO/BRANCH/N`` pasted from list-commit, or ``BRANCH/N`` as the seed writes it."""
    client.put_file(f"{repo}@master:/f", b"first\n")
    client.put_file(f"{repo}@master:/f", b"second\n")
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({
        "transform": {"cmd": ["sh"], "stdin": ["cat /pfs/a/f /pfs/b/f > /pfs/out/both"]},
        "inputs": [{**commit(repo, f"{repo}/master/0"), "name": "a"},
                   {**commit(repo, "master/1"), "name": "b"}]}))
    job_id = pfsd.ok("create-job", "-f", spec).strip()
    done = pfsd.json("job", "wait", job_id)
    assert done["state"] == "success", done
    assert pfsd.get("get-file", f"job-{job_id[:12]}", "master/0", "both") == b"first\nsecond\n"
