"""Bad input: every failure is one ``error: ...`` line on stderr, a non-zero exit code, no
traceback, and nothing changed (checked through listings afterwards)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pfsmount import Client

MISSING_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def data(pfsd, client: Client) -> dict[str, str]:
    """A repo ``data`` with two finished commits and a ``dev`` branch; ids by name."""
    client.create_repo("data")
    first = client.put_file("data@master:/sales", b"apple 1\n").id
    second = client.put_file("data@master:/more", b"pear 2\n").id
    client.create_branch("data", "dev", first)
    return {"first": first, "second": second}


def state(client: Client) -> object:
    """Everything a user could see change: repos, and each repo's branches and commits."""
    repos = client.list_repos()
    return (
        [(r.name, r.size, r.description) for r in repos],
        {r.name: ([(b.name, b.head, b.open) for b in client.list_branches(r.name)],
                  [(c.id, c.finished is not None, c.size) for c in client.list_commits(r.name)])
         for r in repos},
    )


@pytest.fixture
def unchanged(client: Client, data: dict[str, str]) -> Iterator[None]:
    before = state(client)
    yield
    assert state(client) == before, "a failed command changed something"


@pytest.fixture(scope="module")
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once closed


@pytest.mark.parametrize(("args", "code", "match"), [
    (["repo", "inspect", "nope"], 3, "repo nope not found"),
    (["file", "get", "nope@master:/sales"], 3, "repo nope not found"),
    (["file", "put", "nope@master:/x", "-"], 3, "repo nope not found"),
    (["commit", "list", "data@nobranch"], 3, "branch nobranch not found"),
    (["commit", "inspect", f"data@{MISSING_ID}"], 3, "not found"),
    (["file", "get", "data@nobranch:/sales"], 3, "nobranch not found"),
    (["file", "get", "data@master:/no/such/file"], 3, "not found"),
    (["branch", "create", "data@x", "--head", MISSING_ID], 3, "not found"),
    (["branch", "delete", "data@nobranch"], 3, "branch nobranch not found"),
    (["commit", "delete", f"data@{MISSING_ID}"], 3, "not found"),
    (["file", "get", "data@@x:/sales"], 2, "invalid"),
    (["file", "get", "data@master:relative"], 2, "invalid reference"),
    (["file", "list", "data@master::/x"], 2, "invalid reference"),
    (["commit", "inspect", "data@master^^^^"], 3, "has no parent"),
    (["repo", "create", "a/b"], 2, "invalid repo name"),
    (["repo", "create", "a@b"], 2, "invalid repo name"),
    (["repo", "create", "a:b"], 2, "invalid repo name"),
    (["repo", "create", "a b"], 2, "invalid repo name"),
    (["repo", "create", ".hidden"], 2, "invalid repo name"),
    (["create-repo", "--", "-dash"], 2, "invalid repo name"),
    (["repo", "create", "data"], 4, "already exists"),
    (["branch", "create", "data@bad/name"], 2, "invalid"),
    (["file", "put", "data@master:/../escape", "-"], 2, r"'\.\.'"),
    (["file", "put", "data@master:/a/../../escape", "-"], 2, r"'\.\.'"),
    (["put-file", "data", "master", "../escape", "-f", "-"], 2, r"'\.\.'"),
    (["file", "put", "data@master:/x", "/no/such/source"], 2, "no such file"),
    (["file", "put", "data@master:/x"], 2, "needs a source"),
    (["file", "put", "data@master:/sales/under", "-"], 5, "sales is not a directory"),
    (["file", "delete", "data@master:/nothing"], 3, "not found"),
    (["commit", "finish", "data@master"], 5, "no open commit"),
    (["finish-commit", "data", "dev"], 5, "no open commit"),
    (["commit", "squash", "data@master"], 5, None),
    (["repo", "create", "r\udcff"], 2, r"argument 'r\\xff' is not valid UTF-8"),
    (["file", "put", "data@master:/x\udcff", "-"], 2, r"x\\xff' is not valid UTF-8"),
    (["file", "get", "data@master:/x\udcff"], 2, "not valid UTF-8"),
    (["file", "put", "data@master:/x", "/tmp/\udcfe"], 2, "not valid UTF-8"),
    (["file", "put", "data@master:/" + "n" * 256, "-"], 2, "256 bytes long, at most 255"),
    (["pipeline", "create", "-f", "-"], 2, r"inputs\[0\]\.name"),
])
def test_bad_input_is_one_line_and_changes_nothing(pfsd, unchanged, args, code,
                                                   match) -> None:
    spec = ('{"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, '
            '"inputs": [{"repo": {"name": "data"}, "name": 5}]}')
    pfsd.fails(*args, code=code, match=match,
               input=spec if args[0] == "pipeline" else "some data\n")


def test_a_big_upload_refused_at_once_still_gets_its_answer(pfsd, unchanged) -> None:
    """The daemon answers before it reads the body, and closes: the client must show that
    answer, not take the closed connection for a daemon that went away."""
    pfsd.fails("file", "put", "nope@master:/x", "-", input=b"x" * (64 << 20), code=3,
               match="repo nope not found")


def test_writing_to_a_finished_commit_is_read_only(pfsd, data, unchanged) -> None:
    first, second = data["first"], data["second"]
    pfsd.fails("file", "put", f"data@{first}:/x", "-", input="x", code=6, match="read-only")
    pfsd.fails("file", "delete", f"data@{second}:/sales", code=6, match="read-only")
    pfsd.fails("file", "put", "data@master^:/x", "-", input="x", code=6, match="read-only")
    pfsd.fails("file", "copy", "data@master:/sales", f"data@{first}:/copy", code=6)


def test_urls_that_fail_leave_no_commit(pfsd, web, closed_port, unchanged) -> None:
    base, _ = web
    r = pfsd.fails("file", "put", "data@master:/u", f"http://127.0.0.1:{closed_port}/x",
                   code=7, match="cannot fetch")
    assert f"127.0.0.1:{closed_port}" in r.err
    pfsd.fails("file", "put", "data@master:/u", f"{base}/missing.csv", code=7,
               match="HTTP 404")
    pfsd.fails("put-file", "data", "master", "-f", f"{base}/missing.csv", code=7)


def test_up_when_a_daemon_already_serves_the_root(pfsd, unchanged) -> None:
    pid = pfsd.pid()
    pfsd.fails("up", code=9, match=rf"already serves {pfsd.root}")
    assert pfsd.pid() == pid


def test_every_command_without_a_daemon_says_run_pfsmount_up(no_daemon) -> None:
    for args in (["repo", "list"], ["status"], ["fsck"], ["down"],
                 ["file", "get", "data@master:/sales"], ["put-file", "data", "master", "x",
                                                         "-f", "-"],
                 ["commit", "list", "data"], ["create-repo", "data"]):
        r = no_daemon.fails(*args, code=8, match="`pfsmount up`", input="x")
        assert str(no_daemon.root) in r.err
    # A root that does not even exist reads the same, and is not created.
    missing = no_daemon.root / "not" / "there"
    type(no_daemon)(missing).fails("repo", "list", code=8, match="`pfsmount up`")
    assert not missing.exists()
