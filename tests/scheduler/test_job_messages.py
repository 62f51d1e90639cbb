"""What a user reads when a job fails or a commit is not finished yet.

A failed job's message must say how its datum ended and what it printed last, in the one line
``commit wait`` shows (it once ended at "log tail:" with nothing after it), and keep the log's
tail below. ``commit wait`` on an open commit waits, as ``pachctl wait commit`` does, but says
on stderr that the commit is open and which command finishes it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

from tests.conftest import env
from tests.scheduler.conftest import IMAGE, Pfsd

HEX32 = r"[0-9a-f]{32}"


def test_a_failed_job_says_how_its_datum_ended(pfsd: Pfsd) -> None:
    pfsd.repos("msg_in")
    pfsd.put("msg_in", {"a": "1\n"})
    pfsd.create(
        pfsd.spec("msg_fail", 'echo "reading $(ls /pfs/msg_in)"; echo "no space for the model"'
                  " >&2; exit 4", pfsd.pin("msg_in"), datum_tries=2),
        pfsd.spec("msg_mute", ["false"], pfsd.pin("msg_in"), datum_tries=1))
    line = pfsd.fails("commit", "wait", "msg_in@master", "--timeout", "60")
    job = pfsd.quick_job("msg_fail")
    assert re.search(rf"pipeline msg_fail job {job['id']} failure: datum {HEX32} failed after "
                     r"2 tries \(exit code 4\): reading a \| no space for the model "
                     rf"\(all of it: `pfsmount logs -p msg_fail --job {job['id']}`\)", line), line
    assert re.search(r"pipeline msg_mute job \w+ failure: .* \(exit code 1\) with no output",
                     line), line
    assert not line.rstrip().endswith("log tail:"), line

    first, rest = job["error"].split("\n", 1)
    assert first.endswith("(exit code 4): reading a | no space for the model"), first
    assert rest.startswith("log tail:\n"), rest
    assert "try 2 of 2\nreading a\nno space for the model\n[pfsmount] exit code 4" in rest, rest
    shown = pfsd.ok("job", "inspect", job["id"])
    assert "no space for the model\n[pfsmount] exit code 4" in shown, shown


def test_commit_wait_on_an_open_commit_says_so(pfsd: Pfsd) -> None:
    pfsd.repos("open_in")
    with pfsd.api() as c:
        commit = c.start_commit("open_in", "master").id
    notice = (f"commit open_in@{commit} is open: waiting until it is finished "
              "(`pfsmount commit finish open_in@master`)")
    r = pfsd.run("commit", "wait", "open_in@master", "--timeout", "1")
    assert r.code != 0 and "Traceback" not in r.err, r
    assert r.err.splitlines() == [
        notice, f"error: timed out waiting for commit open_in@{commit}: it is still open; "
                "`pfsmount commit finish open_in@master` finishes it"], r.err

    # without a timeout it keeps waiting, and returns once the commit is finished
    waiter = subprocess.Popen(pfsd.argv("commit", "wait", "open_in@master", "--json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        assert waiter.stderr is not None
        assert waiter.stderr.readline().decode().rstrip("\n") == notice
        time.sleep(0.5)
        assert waiter.poll() is None, "commit wait returned while the commit was open"
        pfsd.ok("commit", "finish", "open_in@master")
        out, err = waiter.communicate(timeout=60)
    finally:
        waiter.kill()
    assert waiter.returncode == 0 and err == b"", err
    assert json.loads(out) == []  # nothing downstream
    assert pfsd.run("commit", "wait", "open_in@master").err == ""  # finished: not a word


def test_a_datum_that_runs_too_long_says_it_timed_out(pfsd: Pfsd, docker_ready: None) -> None:
    """``datum_timeout`` stops a datum in either runner, and the job's first line says it
    timed out (a Docker datum once read "exit code -9", as if it had failed by itself)."""
    pfsd.repos("slow_in")
    pfsd.put("slow_in", {"a": "1\n"})
    pfsd.create(
        pfsd.spec("slow_bwrap", "echo started; sleep 60", pfsd.pin("slow_in"), datum_tries=1,
                  datum_timeout="1s"),
        pfsd.spec("slow_docker", "echo started; sleep 60", pfsd.pin("slow_in"), datum_tries=1,
                  datum_timeout="1s", image=IMAGE))
    started = time.monotonic()
    line = pfsd.fails("commit", "wait", "slow_in@master", "--timeout", "50")
    assert time.monotonic() - started < 50, "a datum ran past its timeout"
    for name in ("slow_bwrap", "slow_docker"):
        assert re.search(rf"pipeline {name} job \w+ failure: datum {HEX32} failed after 1 "
                         r"tries \(timed out\): started", line), line
