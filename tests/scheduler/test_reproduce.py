"""``pfsmount datum list/run/shell``: one datum of a finished job, rerun by hand as its
runner ran it (real daemon, real mount, real bubblewrap).

A pipeline fails on one input file. ``datum run`` (its default: the failed datum) must fail
the same way, printing the lines the datum logged, and ``datum shell`` with a script on stdin
must see that datum's input bytes, env and layout, still after the branch moved on. Bad input
is one line and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import time
from pathlib import Path

from tests.scheduler.conftest import IMAGE, Pfsd

SCRIPT = ("echo \"reading $in in $(pwd)\"; cat /pfs/in/*; "
          "if grep -q boom /pfs/in/*; then echo cannot add boom >&2; exit 3; fi; "
          "cp /pfs/in/* /pfs/out/")


def _setup(pfsd: Pfsd) -> tuple[str, str]:
    """Pipeline rp over repo rpin (x fails, ok passes), after its failed job: the two
    datum ids, failed first."""
    pfsd.repos("rpin")
    pfsd.put("rpin", {"x": "boom 1\nboom 2\n", "ok": "fine\n"})
    pfsd.create(pfsd.spec("rp", SCRIPT, {"pfs": {"repo": "rpin", "glob": "/*", "name": "in"}},
                          datum_tries=1))
    pfsd.run("commit", "wait", "rpin@master", "--timeout", "90", timeout=120)
    assert pfsd.quick_job("rp")["state"] == "failure"
    rows = pfsd.json("datum", "list", "rp")
    states = {r["state"]: r for r in rows}
    assert sorted(states) == ["failed", "success"], rows
    assert re.fullmatch(r"in=rpin@[0-9a-f]+:/x", " ".join(states["failed"]["files"]))
    return states["failed"]["id"], states["success"]["id"]


def test_datum_run_and_shell_reproduce_a_failed_datum(pfsd: Pfsd) -> None:
    failed, passed = _setup(pfsd)
    logged = pfsd.ok("logs", "-p", "rp", "--datum", failed)
    said = [line for line in logged.splitlines() if not line.startswith("[pfsmount]")]
    assert "cannot add boom" in said

    r = pfsd.run("datum", "run", "rp")  # the failed datum of the last failed job
    assert r.code == 3, r
    assert r.out.splitlines() == said  # the same lines, in the same order
    assert f"datum {failed}" in r.err and "exit code 3" in r.err

    r = pfsd.run("datum", "run", "rp", passed[:10])  # a unique prefix will do
    assert r.code == 0, r
    assert r.out.splitlines() == ["reading /pfs/in/ok in /", "fine"]
    out = Path(re.search(r"/pfs/out is (\S+)", r.err)[1])  # type: ignore[index]
    assert (out / "ok").read_bytes() == b"fine\n"  # what the transform wrote, kept

    pfsd.put("rpin", {"x": "now fine\n"})  # the branch moves on; the datum stays pinned
    pfsd.run("commit", "wait", "rpin@master", "--timeout", "90", timeout=120)
    assert pfsd.quick_job("rp")["state"] == "success"
    script = ("cat /pfs/in/x; ls /pfs; echo \"$PACH_DATUM_ID $PPS_PIPELINE_NAME\"; id -u; "
              "touch /pfs/in/new 2>/dev/null || echo read-only; echo made > /pfs/out/made\n")
    r = pfsd.run("datum", "shell", "rp", failed, input=script)
    assert r.code == 0, r
    assert r.out.splitlines() == ["boom 1", "boom 2", "in", "out", f"{failed} rp", "65534",
                                  "read-only"]
    out = Path(re.search(r"/pfs/out is (\S+)", r.err)[1])  # type: ignore[index]
    assert (out / "made").read_bytes() == b"made\n"


def test_datum_bad_input_is_one_line(pfsd: Pfsd) -> None:
    pfsd.fails("datum", "run", "no_such_pipe", match="pipeline no_such_pipe not found")
    pfsd.fails("datum", "shell", "no_such_pipe", "abc", match="not found")
    pfsd.fails("datum", "list", "no_such_pipe", match="not found")
    pfsd.repos("rpbad")
    pfsd.create(pfsd.spec("rpb", "true", pfsd.pin("rpbad")))
    pfsd.fails("datum", "run", "rpb", match="no finished job")
    pfsd.put("rpbad", {"a": "1"})
    pfsd.wait("rpbad@master")
    pfsd.fails("datum", "run", "rpb", "0123abcd", match="datum 0123abcd not found")
    pfsd.fails("datum", "run", "rpb", "not-hex!", match="not a datum id")
    pfsd.fails("datum", "shell", "rpb", "--job", "feedbeef", match="job feedbeef not found")


def test_datum_run_and_shell_in_the_pipelines_image(pfsd: Pfsd, docker_ready: None) -> None:
    pfsd.repos("rpdin")
    pfsd.put("rpdin", {"x": "in the image\n"})
    pfsd.create(pfsd.spec("rpd", "cat /pfs/in/*; echo \"$PPS_PIPELINE_NAME\"; exit 5",
                          {"pfs": {"repo": "rpdin", "glob": "/*", "name": "in"}},
                          image=IMAGE, datum_tries=1))
    pfsd.run("commit", "wait", "rpdin@master", "--timeout", "90", timeout=120)
    r = pfsd.run("datum", "run", "rpd")
    assert (r.code, r.out) == (5, "in the image\nrpd\n"), r
    assert f"image {IMAGE}" in r.err
    r = pfsd.run("datum", "shell", "rpd", input="cat /pfs/in/x; ls /pfs; id -u\n")
    assert r.code == 0, r
    assert r.out.splitlines()[:3] == ["in the image", "in", "out"], r


def test_datum_shell_on_a_terminal_takes_ctrl_c_to_the_command(pfsd: Pfsd) -> None:
    """On a terminal, Ctrl-C stops what the shell runs, not the shell; its exit status is
    the command's."""
    pfsd.repos("rptty")
    pfsd.put("rptty", {"x": "hello\n"})
    pfsd.create(pfsd.spec("rpt", "cat /pfs/in/x", {"pfs": {"repo": "rptty", "glob": "/*",
                                                            "name": "in"}}))
    pfsd.wait("rptty@master")
    argv = pfsd.argv("datum", "shell", "rpt")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the terminal
        os.execv(argv[0], argv)
    seen = b""

    def until(text: bytes, timeout: float = 20) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            assert time.monotonic() < deadline, f"no {text!r} in {seen!r}"
            if select.select([fd], [], [], 0.1)[0]:
                seen += os.read(fd, 4096)

    try:
        until(b"$ ")
        os.write(fd, b"sleep 60; echo slept\n")
        time.sleep(0.5)
        os.write(fd, b"\x03")  # Ctrl-C
        os.write(fd, b"cat /pfs/in/x; exit 7\n")
        until(b"hello\r\n")
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 7
    assert b"\nslept" not in seen  # the sleep was stopped, and with it its line


def test_datum_run_reproduces_a_1x_container(pfsd: Pfsd) -> None:
    """A 1.3 spec's unit is a container over a partitioned view: rebuilt alike, the same
    file in view and the same failure."""
    pfsd.repos("rpv1")
    pfsd.put("rpv1", {"a": "fine\n", "b": "boom\n"})
    script = "cat /pfs/rpv1/*; if grep -q boom /pfs/rpv1/*; then exit 4; fi"
    pfsd.create({"pipeline": {"name": "rpv1p"}, "transform": {"cmd": ["sh"],
                 "stdin": [script]}, "parallelism": "2",
                 "inputs": [{"repo": {"name": "rpv1"}, "method": "map"}]})
    pfsd.run("commit", "wait", "rpv1@master", "--timeout", "90", timeout=120)
    rows = pfsd.json("datum", "list", "rpv1p")
    assert sorted(r["state"] for r in rows) == ["failed", "success"], rows
    r = pfsd.run("datum", "run", "rpv1p")
    assert (r.code, r.out) == (4, "boom\n"), r
    ok = next(row["id"] for row in rows if row["state"] == "success")
    r = pfsd.run("datum", "shell", "rpv1p", ok, input="ls /pfs; ls /pfs/rpv1\n")
    assert (r.code, r.out) == (0, "out\nrpv1\na\n"), r
