"""``pfsmount notebook REF``: JupyterLab over one exact commit and its provenance.

A real daemon with a real mount runs a sum pipeline over a data repo; the test starts
``pfsmount notebook sum@<commit>`` for the first output commit, then moves the data branch
on, and reads through the Jupyter server's own REST API (contents) with the printed token:
``/pfs/sum`` and ``/pfs/data`` must hold that commit's and its provenance's bytes, read-only,
and ``/pfs/out`` must take a file. Ctrl-C (SIGINT) must stop it with exit 0, the file kept in
the printed directory, and no process of it left.

JupyterLab (the notebook extra), FUSE and bwrap are real parts: missing, they skip the test on
a developer's machine and fail it under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import unusable
from tests.scheduler.conftest import Pfsd, serving

SUM = ("for f in apple banana; do grep \"^$f \" /pfs/data/sales | "
       "awk '{s += $2} END {print s + 0}' > /pfs/out/$f; done")


@pytest.fixture(scope="module")
def stand() -> Iterator[Pfsd]:
    if importlib.util.find_spec("jupyterlab") is None:
        unusable("JupyterLab is not installed", "CI must run the notebook command (the "
                 "notebook extra, pulled in by test)")
    with serving("pfnb") as d:
        yield d


def _tree(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(k) for k in (task / "children").read_text().split()]
    return found


def _kernels(pid: int) -> list[int]:
    """The ipykernel processes under ``pid``."""
    found = []
    for p in _tree(pid):
        try:
            if b"ipykernel" in Path(f"/proc/{p}/cmdline").read_bytes():
                found.append(p)
        except OSError:
            continue
    return found


def _url(proc: subprocess.Popen[bytes]) -> tuple[str, str, list[str]]:
    """The URL and token ``pfsmount notebook`` printed, and its lines up to them."""
    assert proc.stdout is not None
    printed: list[str] = []
    while not any("token=" in line for line in printed):
        line = proc.stdout.readline().decode()
        assert line, f"no URL: {printed} {proc.stderr.read() if proc.stderr else ''!r}"
        printed.append(line)
    m = re.search(r"(http://127\.0\.0\.1:\d+)/lab\?token=(\w+)", printed[-1])
    assert m, printed
    return m[1], m[2], printed


@pytest.mark.timeout(180, method="thread")
def test_notebook_pins_a_commit_and_its_provenance(stand: Pfsd) -> None:
    d = stand
    d.repos("data")
    first = d.put("data", {"sales": "apple 3\nbanana 2\napple 4\n"})
    d.create(d.spec("sum", SUM, d.pin("data", "/")))
    pinned = d.wait(f"data@{first}")["sum"]
    d.put("data", {"sales": "apple 100\n"})  # the branch moves on after the pin
    d.wait("data@master")
    assert d.get("sum@master:/apple") == b"100\n"

    proc = subprocess.Popen(d.argv("notebook", f"sum@{pinned}"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=d.root)
    try:
        url, token, printed = _url(proc)
        assert f"/pfs/data  data@{first}  read-only\n" in printed
        assert f"/pfs/sum  sum@{pinned}  read-only\n" in printed
        with httpx.Client(base_url=url, headers={"Authorization": f"token {token}"},
                          timeout=30) as api:
            listing = api.get("/api/contents/pfs").json()
            assert sorted(c["name"] for c in listing["content"]) == ["data", "out", "sum"]

            def read(path: str) -> str:
                r = api.get(f"/api/contents/{path}", params={"content": 1, "format": "text"})
                assert r.status_code == 200, r.text
                text: str = r.json()["content"]
                return text

            assert read("pfs/sum/apple") == "7\n" and read("pfs/sum/banana") == "2\n"
            assert read("pfs/data/sales") == "apple 3\nbanana 2\napple 4\n"
            note = {"type": "file", "format": "text", "content": "why a drop?\n"}
            assert api.put("/api/contents/pfs/out/note.txt", json=note).status_code == 201
            assert api.put("/api/contents/pfs/sum/note.txt", json=note).status_code >= 400
            assert api.get("/api/contents/pfs/sum").status_code == 200
            assert read("pfs/sum/apple") == "7\n"
            assert api.get("/api/contents/pfs/out/note.txt").status_code == 200
            # Unauthenticated, nothing.
            assert httpx.get(f"{url}/api/contents/pfs").status_code == 403
            # A kernel starts in the sandbox (this Python, read-only) and keeps running.
            assert api.post("/api/kernels", json={"name": "python3"}).status_code == 201
            deadline = time.monotonic() + 60
            while not (kernels := _kernels(proc.pid)):
                assert time.monotonic() < deadline, "no kernel process started"
                time.sleep(0.2)
            time.sleep(1)
            assert all(Path(f"/proc/{pid}").exists() for pid in kernels)
        tree = _tree(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    kept = re.search(r"/pfs/out is in (\S+)", out.decode())
    assert kept, out
    assert (Path(kept[1]) / "note.txt").read_text() == "why a drop?\n"
    deadline = time.monotonic() + 10  # the pid namespace's last ones may lag a little
    while (left := [pid for pid in tree if Path(f"/proc/{pid}").exists()]) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    names = [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in left]
    assert left == [], f"processes of the notebook outlived it: {names}"

    # Without the mount: the commits exported, the same bytes.
    proc = subprocess.Popen(d.argv("notebook", "--no-mount", f"sum@{pinned}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=d.root)
    try:
        url, token, _ = _url(proc)
        r = httpx.get(f"{url}/api/contents/pfs/data/sales", params={
            "content": 1, "format": "text", "token": token}, timeout=30)
        assert r.json()["content"] == "apple 3\nbanana 2\napple 4\n"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0

    # --out REPO@BRANCH: /pfs/out is that branch on the mount; a commit finish seals it.
    d.repos("notes")
    proc = subprocess.Popen(d.argv("notebook", f"sum@{pinned}", "--out", "notes@master"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=d.root)
    try:
        url, token, printed = _url(proc)
        assert "/pfs/out  notes@master  writable\n" in printed
        r = httpx.put(f"{url}/api/contents/pfs/out/why.txt", params={"token": token},
                      json={"type": "file", "format": "text", "content": "apples\n"},
                      timeout=30)
        assert r.status_code == 201, r.text
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    d.ok("commit", "finish", "notes@master")
    assert d.get("notes@master:/why.txt") == b"apples\n"


def test_notebook_bad_input_is_one_line(stand: Pfsd) -> None:
    stand.fails("notebook", "nosuchrepo@master", match="not found")
    stand.repos("nbin")
    stand.fails("notebook", "nbin@master", match="nbin@master has no commits")
    stand.put("nbin", {"a": "1"})
    stand.fails("notebook", "nbin@master", "--out", "nbin", match="REPO@BRANCH")
    stand.fails("notebook", "nbin@master", "--out", "nbin@nobranch", match="not found")
