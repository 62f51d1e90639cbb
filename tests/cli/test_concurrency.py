"""Several ``pfsmount file put`` processes at once against one branch: none is lost.

Each put opens, writes and finishes its own commit; concurrent ones must serialize on the
branch head (compare-and-swap), so every put lands as a commit of its own on one line of
history and every file is there afterwards with its full content.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from pfsmount import Client


def start_together(procs_args: list[tuple[list[str], bytes | None]], pfsd
                   ) -> list[tuple[int, bytes, bytes]]:
    """Start every command before waiting for any; returns (code, stdout, stderr) each."""
    procs = []
    for args, stdin in procs_args:
        p = subprocess.Popen(pfsd.argv(*args), stdin=subprocess.PIPE if stdin else
                             subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        procs.append((p, stdin))
    results = []
    for p, stdin in procs:
        out, err = p.communicate(stdin, timeout=120)
        results.append((p.returncode, out, err))
    return results


def assert_linear(client: Client, repo: str, count: int) -> None:
    """``count`` finished commits on master, each the parent of the next."""
    chain = client.list_commits(repo, "master")
    assert len(chain) == count == len(client.list_commits(repo))
    assert all(c.finished is not None for c in chain)
    assert [c.parent for c in chain] == [c.id for c in chain[1:]] + [None]


def test_two_puts_to_one_branch_at_once_both_land(pfsd, client, repo,
                                                  tmp_path: Path) -> None:
    rng = random.Random(11)
    expected: dict[str, bytes] = {}
    rounds = 4
    for i in range(rounds):
        from_file = rng.randbytes(rng.randrange(1, 2 << 20))
        from_stdin = rng.randbytes(rng.randrange(1, 256 << 10))
        src = tmp_path / f"round{i}.bin"
        src.write_bytes(from_file)
        results = start_together([
            (["file", "put", f"{repo}@master:/r{i}/file.bin", src], None),
            (["file", "put", f"{repo}@master:/r{i}/stdin.bin", "-"], from_stdin),
        ], pfsd)
        for code, out, err in results:
            assert code == 0 and not err, err.decode()
            assert out.decode().startswith(f"{repo}@")
        ids = {out.decode().strip().split("@")[1] for _, out, _ in results}
        assert len(ids) == 2, "two puts without an open commit make two commits"
        expected[f"/r{i}/file.bin"] = from_file
        expected[f"/r{i}/stdin.bin"] = from_stdin
        assert_linear(client, repo, 2 * (i + 1))

    files = {f.path: f for f in client.walk_files(f"{repo}@master")}
    assert set(files) == set(expected)
    for path, data in expected.items():
        assert client.read_file(f"{repo}@master:{path}") == data, path
    # and the user sees every one of them
    listed = pfsd.ok("file", "glob", f"{repo}@master", "r*/*.bin")
    assert sorted(line.split()[0] for line in listed.splitlines()[1:]) == sorted(expected)


def test_eight_puts_of_different_files_at_once(pfsd, client, repo, tmp_path: Path) -> None:
    rng = random.Random(8)
    expected = {}
    jobs: list[tuple[list[str], bytes | None]] = []
    for i in range(8):
        data = rng.randbytes(rng.randrange(1000, 512 << 10))
        expected[f"/f{i}"] = data
        if i % 2:
            jobs.append((["file", "put", f"{repo}@master:/f{i}", "-"], data))
        else:
            (tmp_path / f"f{i}").write_bytes(data)
            jobs.append((["put-file", repo, "master", f"f{i}", "-f", tmp_path / f"f{i}"],
                         None))
    for code, _, err in start_together(jobs, pfsd):
        assert code == 0 and not err, err.decode()
    assert_linear(client, repo, 8)
    for path, data in expected.items():
        assert pfsd.get("file", "get", f"{repo}@master:{path}") == data if path == "/f0" \
            else client.read_file(f"{repo}@master:{path}") == data


def test_concurrent_appends_to_one_file_keep_both(pfsd, client, repo) -> None:
    client.put_file(f"{repo}@master:/log", b"start\n")
    lines = [f"writer {i}\n".encode() * 1000 for i in range(4)]
    results = start_together(
        [(["file", "put", "--append", f"{repo}@master:/log", "-"], data) for data in lines],
        pfsd)
    for code, _, err in results:
        assert code == 0 and not err, err.decode()
    log = client.read_file(f"{repo}@master:/log")
    assert log.startswith(b"start\n") and len(log) == 6 + sum(map(len, lines))
    assert all(data in log for data in lines), "an append was lost"
    assert_linear(client, repo, 5)
