"""A daemon that dies right after a job's output commit is made, before the job is marked done,
leaves one output commit, not two.

The SIGKILL loops (tests/reliability/test_kills.py) found it: the job was still "running" in
the store, so the restarted daemon ran it again, and every datum being reused, wrote the
same output a second time; `commit list` showed two output commits for one input commit
(and a downstream pipeline would have run twice). The crash is placed at that instant here:
the events that follow the commit raise, as if the process had died there (nothing after
the commit's transaction runs). Then a new daemon's scheduler recovers the store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from scheduler.engine import Scheduler
from scheduler.spec import parse_specs
from tests.scheduler.conftest import require_bwrap

SPEC = """{"pipeline": {"name": "twice"}, "input": {"pfs": {"repo": "src", "glob": "/*"}},
 "transform": {"cmd": ["sh", "-c", "cat /pfs/src/* /pfs/src/* > /pfs/out/x"]}}"""


class Died(BaseException):
    """The process ends here: nothing catches it, nothing after it runs."""


def test_a_crash_after_the_output_commit_makes_no_second_one(tmp_path: Path) -> None:
    require_bwrap()
    root = tmp_path / "root"
    pfs = Pfs(root)
    try:
        pfs.repos.create("src")
        pfs.files.put("src@master:/a", Data(b"abc\n"))
        sched = Scheduler(pfs, root, None)
        sched.create_pipeline(parse_specs(SPEC)[0])
        (job,) = sched.list_jobs("twice")

        def die(*events: object) -> None:
            raise Died

        pfs.events.emit = die  # type: ignore[method-assign]
        with pytest.raises(Died):
            sched.execute(job.id)
        assert len(pfs.commits.list("twice")) == 1  # the output was committed
    finally:
        pfs.close()

    pfs = Pfs(root)  # the daemon starts again: it recovers the job and runs what is left
    try:
        sched = Scheduler(pfs, root, None)
        for job_id in sched._recover():
            sched.execute(job_id)
        (job,) = sched.list_jobs("twice")
        assert job.state == "success", job.error
        outputs = pfs.commits.list("twice")
        assert [f"twice@{c.id}" for c in outputs] == [job.output], "a second output commit"
        assert b"".join(pfs.files.read(pfs.files.open("twice@master", "/x")[1])) == b"abc\n" * 2
    finally:
        pfs.close()
