"""A finished commit's jobs are made even when making one fails for a while.

Jobs are made in a trio system task, where an exception ends the whole daemon. This runs the
real scheduler in-process over a real store, with the job write failing as a full disk makes
it fail, and checks that the daemon's run goes on and the job appears once the disk has room.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import trio

from pfsmount.pfs.files import Data
from pfsmount.pfs.system import Pfs
from scheduler.engine import Scheduler
from scheduler.records import Job
from scheduler.spec import parse_specs


def test_a_job_that_cannot_be_made_yet_is_made_later_and_the_daemon_stays_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    pfs = Pfs(root)
    scheduler = Scheduler(pfs, root, None)
    pfs.repos.create("data")
    spec = {"pipeline": {"name": "copy"}, "transform": {"cmd": ["true"]},
            "input": {"pfs": {"repo": "data", "glob": "/*"}}}
    scheduler.create_pipelines(parse_specs(json.dumps(spec)))
    save = scheduler._save
    failures = []

    def full_disk_twice(job: Job) -> None:
        if len(failures) < 2:
            failures.append(job.id)
            raise OSError(errno.ENOSPC, "No space left on device")
        save(job)

    monkeypatch.setattr(scheduler, "_save", full_disk_twice)

    async def main() -> list[Job]:
        async with trio.open_nursery() as nursery:
            await scheduler.service(nursery)
            commit = await trio.to_thread.run_sync(
                lambda: pfs.files.put("data@master:/a", Data(b"1")))
            with trio.fail_after(30):
                while not (jobs := scheduler.list_jobs("copy")):
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        assert jobs[0].inputs["data@master"] == commit.id
        return jobs

    try:
        jobs = trio.run(main)
    finally:
        pfs.close()
    assert len(failures) == 2 and len(jobs) == 1
