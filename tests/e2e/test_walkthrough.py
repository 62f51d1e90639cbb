"""The fruit-stand versioning walkthrough, typed as README shows it, from ``up`` to ``down``.

Commands run in ``examples/fruit_stand`` with relative file names, exactly as a user would.
"""

from __future__ import annotations

import re
import time

ID = r"[0-9a-f]{32}"


def test_fruit_stand_walkthrough(no_daemon, examples) -> None:
    pfs = no_daemon
    set1 = (examples / "set1.txt").read_bytes()
    set2 = (examples / "set2.txt").read_bytes()

    def run(*args: str) -> str:
        r = pfs.run(*args, cwd=examples)
        assert r.code == 0, f"pfsmount {' '.join(args)} exited {r.code}: {r.err}"
        assert r.err == "", r.err
        return r.out

    out = run("up", "--no-mount")
    assert re.fullmatch(rf"pfsmount serving {pfs.root} \(pid \d+\)\n", out), out
    try:
        assert run("create-repo", "data") == ""
        out = run("list-repo")
        assert out.splitlines()[0].split() == ["NAME", "CREATED", "SIZE", "DESCRIPTION"]
        assert re.search(r"^data\s+(just now|\d+ seconds? ago)\s+0 B\s*$", out, re.M), out

        out = run("put-file", "data", "master", "sales", "-c", "-f", "set1.txt")
        first = re.fullmatch(rf"data@({ID})\n", out)
        assert first, out
        assert re.search(r"^data\s+.*\s1\.691 KiB\s*$", run("list-repo"), re.M)

        out = run("list-commit", "data")
        lines = out.splitlines()
        assert lines[0].split() == ["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED",
                                    "SIZE"]  # as 1.x printed it: BRANCH/N from 0
        assert len(lines) == 2 and lines[1].split()[:3] == ["master", "data/master/0",
                                                            "<none>"], out
        assert lines[1].rstrip().endswith("1.691 KiB")
        assert pfs.get("get-file", "data", "master", "sales") == set1

        out = run("put-file", "data", "master", "sales", "-c", "-f", "set2.txt")
        second = re.fullmatch(rf"data@({ID})\n", out)
        assert second and second[1] != first[1], out
        out = run("list-commit", "data")
        assert [line.split()[1:3] for line in out.splitlines()[1:]] == [
            ["data/master/1", "master/0"], ["data/master/0", "<none>"]]
        assert pfs.json("inspect-commit", "data", "master/1")["id"] == second[1]
        assert out.splitlines()[1].rstrip().endswith("3.390 KiB"), out
        # flush-commit waits for everything downstream: no pipelines here, so nothing.
        assert run("flush-commit", "data@master").split() == lines[0].split()
        # 1.x put-file appends: sales now holds both days' sales.
        assert pfs.get("get-file", "data", "master", "sales") == set1 + set2
        # ... and the first version is still there.
        assert pfs.get("file", "get", "data@master^:/sales") == set1
        assert pfs.get("get-file", "data", first[1], "sales") == set1

        out = run("fsck")
        assert re.search(r"checked 1 repos, 2 commits, .*: 0 errors$", out.strip()), out
    finally:
        r = pfs.run("down")
    assert r.code == 0 and re.fullmatch(r"pfsmount stopped \(pid \d+\)\n", r.out), r
    deadline = time.monotonic() + 10
    while (pfs.root / "pfsmount.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pfs.fails("list-repo", code=8, match="`pfsmount up`")
