"""A daemon killed in the middle of a job (SIGKILL) and started again finishes that job.

DESIGN: a job is persisted before it runs, so a daemon that dies mid-job reruns it on restart.
The user sees: ``pfsmount up`` again, ``commit wait`` returns the output commit, the output is
right, and ``job list`` still shows every job, none stuck and none doubled.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pfsmount.api.pipeline_client import PipelineClient

if TYPE_CHECKING:
    from tests.scheduler.conftest import Pfsd

N = 5


def test_sigkill_mid_job_then_up_finishes_the_job(own_pfsd: Pfsd) -> None:
    d = own_pfsd
    d.repos("slow_in")
    files = {f"f{i}": f"{i * 11}\n" for i in range(N)}
    first = d.put("slow_in", files)
    d.create(d.spec("slow", 'sleep 1; for f in /pfs/slow_in/*; do echo "$(cat "$f") done" > '
                    '/pfs/out/$(basename "$f"); done', d.pin("slow_in")),
             d.spec("slow_after", "cat /pfs/slow/* > /pfs/out/all", d.pin("slow", "/")))

    # kill the daemon once the job has run a datum or two, well before its last one
    deadline = time.monotonic() + 60
    with d.api() as c:  # polled through the client: a command takes too long to start
        while True:
            running = PipelineClient(c).jobs("slow")
            if running and running[0].state == "running" and running[0].processed >= 1:
                break
            assert time.monotonic() < deadline, f"the job never got going: {running}"
            time.sleep(0.05)
    d.kill9()
    job_id = running[0].id
    assert running[0].processed < N, "the job finished before the kill: make datums slower"

    d.up()
    out = d.cli_wait(f"slow_in@{first}")
    assert set(out) == {"slow", "slow_after"}
    assert d.tree("slow") == {k: f"{v.strip()} done\n".encode() for k, v in files.items()}
    assert d.get("slow_after@master:/all") == b"".join(
        f"{files[k].strip()} done\n".encode() for k in sorted(files))

    jobs = d.jobs("slow")
    assert [j["id"] for j in jobs] == [job_id], "a job was lost or made twice"
    job = d.json("job", "inspect", job_id)
    assert (job["state"], job["datums"], job["output"]) == ("success", N, f"slow@{out['slow']}")
    assert job["processed"] + job["skipped"] == N
    assert [j["state"] for j in d.jobs("slow_after")] == ["success"]
    assert d.json("commit", "inspect", "slow@master")["provenance"] == [f"slow_in@{first}"]

    # the restarted daemon goes on as before: a new commit runs only the new datum
    d.put("slow_in", {"g": "7\n"})
    d.wait("slow_in@master")
    newest = d.last_job("slow")
    assert (newest["state"], newest["processed"], newest["skipped"]) == ("success", 1, N)
