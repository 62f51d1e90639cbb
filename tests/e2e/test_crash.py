"""SIGKILL the daemon in the middle of writes, again and again, and check what survives.

DESIGN's promise: a finished commit is never lost or corrupted by a crash at any instant, and
a write that had not landed leaves no trace. Each round starts a real ``pfsmount`` put (a
directory of many files, a large file, or stdin) or a ``commit finish`` in a subprocess,
waits until that process has connected to the daemon, sleeps a seeded random 0-300 ms,
``kill -9``s the daemon (its pid from ``pfsmount status --json``) and brings it back with
``pfsmount up``. Then:

- every commit finished before the kill still lists the same files with the same BLAKE3
  hashes, and the newest ones read back byte for byte (at the end, all of them);
- ``pfsmount fsck`` exits 0 with 0 errors;
- the interrupted write is either all there (a new finished commit holding the complete
  data) or not there at all (no new commit, no open commit, none of its paths);
- the interrupted command itself failed with one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import blake3

from pfsmount import Client
from tests.reliability.crashing import Talk, Tree, descendants, kill9, wait_connected

REPO = "crash"
ROUNDS = 15
SEED = 20261127


def make_dir(top: Path, rng: random.Random) -> Tree:
    """Hundreds of small files in nested directories plus one large file."""
    files: Tree = {}
    for i in range(rng.randrange(500, 800)):
        files[f"d{i % 7}/s{i % 3}/f{i:03d}.bin"] = rng.randbytes(rng.randrange(0, 24 << 10))
    files["big.bin"] = rng.randbytes(rng.randrange(6 << 20, 10 << 20))
    for rel, data in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(data)
    return files


def check_commits(client: Client, finished: dict[str, Tree], read: list[tuple[str, str]]
                  ) -> None:
    """Every finished commit lists exactly its files, with their sizes and BLAKE3 hashes;
    the ``(commit, path)`` pairs in ``read`` are also read back byte for byte."""
    for cid, tree in finished.items():
        listed = {f.path: f for f in client.walk_files(f"{REPO}@{cid}")}
        assert set(listed) == set(tree), f"commit {cid} lists other files"
        for path, data in tree.items():
            assert listed[path].size == len(data), f"{cid}:{path} changed size"
            assert listed[path].hash == blake3.blake3(data).hexdigest(), f"{cid}:{path}"
    for cid, path in read:
        assert client.read_file(f"{REPO}@{cid}:{path}") == finished[cid][path], f"{cid}:{path}"


def master(client: Client) -> tuple[str | None, str | None]:
    """Head and open commit of master; a branch that was never committed to has neither."""
    for b in client.list_branches(REPO):
        if b.name == "master":
            return b.head, b.open
    return None, None


def every_content_once(finished: dict[str, Tree]) -> list[tuple[str, str]]:
    """One (commit, path) per distinct content: reading these reads every stored file once
    (the listings already tie every other (commit, path) to one of these hashes)."""
    seen: dict[bytes, tuple[str, str]] = {}
    for cid, tree in finished.items():
        for path, data in tree.items():
            seen.setdefault(blake3.blake3(data).digest(), (cid, path))
    return list(seen.values())


def test_sigkill_during_writes_loses_no_finished_commit(no_daemon, tmp_path: Path) -> None:
    pfs = no_daemon
    rng = random.Random(SEED)  # the data and the delays
    pick = random.Random(SEED + 1)  # which older files are read back
    started = time.monotonic()
    pfs.up()
    pfs.ok("repo", "create", REPO)
    pid = pfs.pid()
    head: Tree = {}  # what master holds now
    finished: dict[str, Tree] = {}  # every finished commit -> its full tree
    order: list[str] = []  # finished commit ids, oldest first
    outcomes = {"landed": 0, "lost": 0}

    for n in range(ROUNDS):
        kind = ("dir", "file", "stdin", "finish")[n % 4]
        new: Tree = {}
        stdin: bytes | None = None
        if kind == "dir":
            src = tmp_path / f"round{n}"
            new = {f"/r{n}/{k}": v for k, v in make_dir(src, rng).items()}
            args: list[str | Path] = ["file", "put", "-r", f"{REPO}@master:/r{n}", src]
        elif kind == "file":
            src = tmp_path / f"round{n}.bin"
            src.write_bytes(rng.randbytes(rng.randrange(24 << 20, 40 << 20)))
            new = {f"/r{n}.bin": src.read_bytes()}
            args = ["file", "put", f"{REPO}@master:/r{n}.bin", src]
        elif kind == "stdin":
            stdin = rng.randbytes(rng.randrange(12 << 20, 20 << 20))
            new = {f"/r{n}-stdin.bin": stdin}
            args = ["put-file", REPO, "master", f"r{n}-stdin.bin", "-f", "-"]
        else:
            # Files written into an open commit are durable before the finish: a kill
            # during `commit finish` leaves the commit finished or open, never damaged.
            with Client(pfs.root, timeout=60) as c:
                opened = c.start_commit(REPO, "master").id
                for i in range(3):
                    data = rng.randbytes(rng.randrange(1, 1 << 20))
                    c.put_file(f"{REPO}@master:/r{n}/part{i}", data)
                    new[f"/r{n}/part{i}"] = data
            args = ["commit", "finish", f"{REPO}@master"]

        proc = subprocess.Popen(pfs.argv(*args), stdin=subprocess.PIPE if stdin else
                                subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        talk = Talk(proc, stdin)
        known = descendants(pid)
        assert wait_connected(proc) or proc.poll() is not None
        time.sleep(rng.uniform(0, 0.05 if kind == "finish" else 0.3))
        kill9(pid, known=known)
        out, err = talk.result()
        code, out_text, err_text = proc.returncode, out.decode(), err.decode()
        assert "Traceback" not in err_text, f"round {n} ({kind}):\n{err_text}"
        if code != 0:
            assert len(err_text.splitlines()) == 1, f"round {n} ({kind}):\n{err_text}"

        pfs.up()
        # The user's checks run beside the test's own: `pfsmount fsck`, and
        # `pfsmount status --json` for the pid the next round kills.
        fsck = pfs.popen("fsck")
        status = pfs.popen("status", "--json")
        with Client(pfs.root, timeout=60) as client:
            head_id, open_id = master(client)
            if kind == "finish" and open_id == opened:
                assert code != 0, "commit finish said it finished, but the commit is open"
                # The open commit came through the crash whole; finish it now.
                assert {p: client.read_file(f"{REPO}@{opened}:{p}") for p in new} == new
                assert pfs.ok("commit", "finish", f"{REPO}@master").strip() == opened
                head_id, open_id = master(client)
            assert open_id is None, f"round {n} ({kind}): a commit was left open"
            commits = client.list_commits(REPO)
            assert all(c.finished is not None for c in commits)
            before = len(order)
            landed = head_id != (order[-1] if order else None)
            if landed:
                # The write landed: one new commit on top, holding all of it.
                assert len(commits) == before + 1
                assert head_id is not None and commits[0].id == head_id
                assert commits[0].parent == (order[-1] if order else None)
                head = {**head, **new}
                finished[head_id] = dict(head)
                order.append(head_id)
                outcomes["landed"] += 1
                if code == 0:
                    assert head_id in out_text
            else:
                # The write did not land: no new commit and no trace of its paths.
                assert code != 0, f"round {n} ({kind}) succeeded but its commit is missing"
                assert len(commits) == before
                outcomes["lost"] += 1
            paths = {f.path for f in client.walk_files(f"{REPO}@master")} if order else set()
            assert paths == set(head), f"round {n} ({kind}): master holds other files"
            # Byte for byte: what this round added (if it landed), and a few older files.
            added = [(order[-1], p) for p in new] if landed else []
            older = [(cid, p) for cid in order[:-1] for p in finished[cid]]
            check_commits(client, finished, added + pick.sample(older, min(5, len(older))))

        out, err = fsck.communicate(timeout=120)
        assert fsck.returncode == 0 and out.decode().rstrip().endswith(": 0 errors"), (
            out.decode() + err.decode())
        out, err = status.communicate(timeout=60)
        assert status.returncode == 0, err.decode()
        pid = int(json.loads(out)["pid"])
        pfs.pids.add(pid)
        if order and n % 3 == 0:  # the user's view of the newest commit, with 1.x words
            path, data = next(iter(finished[order[-1]].items()))
            assert pfs.get("get-file", REPO, order[-1], path) == data

    with Client(pfs.root, timeout=120) as client:
        check_commits(client, finished, every_content_once(finished))
        report = client.fsck(verify=True)
        assert report.errors == [], report.errors
    r = pfs.run("fsck", "--verify")
    assert r.code == 0 and r.out.rstrip().endswith(": 0 errors"), r
    assert pfs.run("down").code == 0
    elapsed = time.monotonic() - started
    print(f"\n{ROUNDS} SIGKILLs in {elapsed:.0f} s: {outcomes}")
    # The kills must hit writes in flight at least sometimes, or this tests nothing.
    assert outcomes["lost"] >= 1 and outcomes["landed"] >= 1, outcomes


