"""Spouts: one long-running process, in the same sandbox as datums, that makes commits to its
output repo by writing /pfs/out and handing it over with the marker file; restarted when it
ends, stopped by ``pipeline stop``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from pfsmount.errors import InvalidArgument
from pfsmount.pfs import Pfs
from scheduler import spout as spout_module
from scheduler.runners import Task
from scheduler.spec import parse_specs
from scheduler.spout import Spout
from tests.conftest import Other
from tests.scheduler.conftest import IMAGE, Pfsd

# Make a commit of what /pfs/out holds: the protocol scheduler/spout.py documents.
COMMIT = ("touch /pfs/out/.pfsmount-commit; "
          "while [ -e /pfs/out/.pfsmount-commit ]; do sleep 0.05; done")


def spout(name: str, script: str, image: str = "", **spout_fields: object
          ) -> dict[str, object]:
    return {"pipeline": {"name": name}, "spout": spout_fields,
            "transform": {"cmd": ["sh"], "stdin": [script], **({"image": image} if image else {})}}


def commits(d: Pfsd, repo: str) -> list[dict[str, object]]:
    """``commit list --json``, oldest first."""
    listed: list[dict[str, object]] = d.json("commit", "list", repo)
    return sorted(listed, key=lambda c: float(str(c["started"])))


def until(what: str, ok: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


def test_a_spout_takes_no_input() -> None:
    with pytest.raises(InvalidArgument, match="a spout takes no input"):
        parse_specs(json.dumps({**spout("s", "true"), "input": {"pfs": {"repo": "a"}}}))
    spec = parse_specs(json.dumps(spout("s", "true", overwrite=True)))[0]
    assert spec.spout is not None and spec.spout.overwrite and spec.tree.leaves() == []


def test_a_spout_makes_three_commits_then_stop_ends_it(pfsd: Pfsd) -> None:
    script = f"for i in 1 2 3; do echo $i > /pfs/out/n$i; {COMMIT}; done; sleep 1000"
    pfsd.create(spout("ticker", script))
    until("three commits", lambda: len(commits(pfsd, "ticker")) >= 3)
    time.sleep(0.5)
    made = commits(pfsd, "ticker")
    assert len(made) == 3  # then it sleeps: no more
    # Without overwrite each commit adds its files to the last one's.
    assert [sorted(pfsd.tree("ticker", str(c["id"]))) for c in made] == \
        [["n1"], ["n1", "n2"], ["n1", "n2", "n3"]]
    assert pfsd.tree("ticker")["n3"] == b"3\n"

    pfsd.ok("pipeline", "stop", "ticker")
    log = pfsd.ok("logs", "-p", "ticker")  # the spout's log
    assert "[pfsmount] spout ticker starts" in log and "spout exited" not in log
    pfsd.ok("pipeline", "delete", "ticker")


def test_overwrite_commits_hold_only_their_own_files_and_a_spout_that_ends_is_restarted(
        pfsd: Pfsd) -> None:
    # Each run makes one commit of a file of a new name, then exits.
    run = "echo x > /pfs/out/$(cat /proc/sys/kernel/random/uuid)"
    pfsd.create(spout("again", f"{run}; {COMMIT}; exit 3", overwrite=True))
    until("a commit from a second run", lambda: len(commits(pfsd, "again")) >= 2)
    first, second = commits(pfsd, "again")[:2]
    one, two = (list(pfsd.tree("again", str(c["id"]))) for c in (first, second))
    assert len(one) == 1 and len(two) == 1 and one != two  # only the run's own file
    log = (pfsd.root / "logs" / "again" / "spout.log").read_text()
    assert "[pfsmount] spout exited (3); starting again in 1 s" in log
    pfsd.ok("pipeline", "stop", "again")
    stopped = len(commits(pfsd, "again"))
    time.sleep(2.5)  # past the next backoff: no run while stopped
    assert len(commits(pfsd, "again")) == stopped
    pfsd.ok("pipeline", "delete", "again")


def test_a_spout_with_an_image_runs_in_docker(pfsd: Pfsd, docker_ready: None) -> None:
    pfsd.create(spout("boxed", f"hostname > /pfs/out/host; {COMMIT}; sleep 1000", image=IMAGE))
    until("a commit", lambda: len(commits(pfsd, "boxed")) >= 1, seconds=60)
    assert pfsd.tree("boxed")["host"] != b"datum\n"  # a container's, not the sandbox's
    pfsd.ok("pipeline", "delete", "boxed")
    assert not [c for c in pfsd.ok("repo", "list").split() if c == "boxed"]


def test_a_spout_runs_again_once_started_and_after_the_daemon_restarts(pfsd: Pfsd) -> None:
    run = "echo x > /pfs/out/$(cat /proc/sys/kernel/random/uuid)"
    pfsd.create(spout("stays", f"{run}; {COMMIT}; sleep 1000", overwrite=True))
    until("a commit", lambda: len(commits(pfsd, "stays")) >= 1)
    pfsd.ok("pipeline", "stop", "stays")
    made = len(commits(pfsd, "stays"))
    pfsd.ok("pipeline", "start", "stays")
    until("a commit after start", lambda: len(commits(pfsd, "stays")) > made)
    made = len(commits(pfsd, "stays"))
    pfsd.down()  # stops the spout with the daemon (and checks the log has no traceback)
    pfsd.up()
    until("a commit after up", lambda: len(commits(pfsd, "stays")) > made)
    pfsd.ok("pipeline", "delete", "stays")


def test_a_spout_that_writes_read_only_directories_makes_one_commit_per_marker(
        pfsd: Pfsd) -> None:
    script = ("mkdir -p /pfs/out/ro/d; echo x > /pfs/out/ro/d/f; "
              f"chmod 555 /pfs/out/ro/d /pfs/out/ro; {COMMIT}; sleep 1000")
    pfsd.create(spout("rospout", script))
    until("a commit", lambda: len(commits(pfsd, "rospout")) >= 1)
    time.sleep(1.5)  # a commit left unemptied would be made again each second
    assert len(commits(pfsd, "rospout")) == 1
    assert pfsd.tree("rospout") == {"ro/d/f": b"x\n"}
    pfsd.ok("pipeline", "delete", "rospout")


EMPTY_AS_OWNER = """
import os, sys, tempfile
from pathlib import Path
from scheduler.spout import COMMIT, _empty
out = Path(tempfile.mkdtemp())
(out / "ro" / "deep").mkdir(parents=True)
(out / "ro" / "deep" / "f").write_text("x")
(out / "ro" / "g").write_text("y")
(out / "gone").mkdir(mode=0o000)
(out / COMMIT).touch()
for d in (out / "ro" / "deep", out / "ro"):
    d.chmod(0o555)  # as cp -r of a read-only input leaves them
_empty(out)
print(sorted(os.listdir(out)))
"""


def test_an_out_dir_with_read_only_directories_is_emptied_by_a_daemon_not_root(
        other: Other) -> None:
    """What a non-root daemon meets: its own files in directories the spout made 0555 (or
    000); emptied all the same, the marker with them."""
    ran = other.run(sys.executable, "-c", EMPTY_AS_OWNER)
    assert (ran.code, ran.out.strip()) == (0, "[]"), ran


class Once:
    """A runner whose runs are counted; the spout's stop ends the second."""

    def __init__(self, spout: list[Spout]) -> None:
        self.runs = 0
        self.spout = spout

    def run(self, task: Task) -> int:
        self.runs += 1
        if self.runs >= 2:
            self.spout[0].stopped.set()
        return 0


def test_a_spout_whose_out_dir_cannot_be_emptied_says_so_and_runs_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fails = iter([PermissionError(13, "Permission denied", "/pfs/out/ro")])

    def empty(top: Path, last: str = "") -> None:
        if (e := next(fails, None)) is not None:
            raise e

    monkeypatch.setattr(spout_module, "empty_dir", empty)
    monkeypatch.setattr(spout_module, "BACKOFF", 0.01)
    spec = parse_specs(json.dumps(spout("sp", "true")))[0]
    made: list[Spout] = []
    runner = Once(made)
    made.append(Spout(cast(Pfs, None), spec, runner, tmp_path / "w", tmp_path / "spout.log"))
    made[0]._run()  # returns once stopped (its thread, without the thread)
    log = (tmp_path / "spout.log").read_text()
    assert "[pfsmount] cannot start: [Errno 13] Permission denied: '/pfs/out/ro'" in log, log
    assert runner.runs == 2, log
