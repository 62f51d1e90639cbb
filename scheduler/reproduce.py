"""One datum of a finished job, rebuilt as its runner saw it: which datum (the failed one
by default), its inputs bound the same way, its environment, working directory, command and
image. A 1.x job's unit is a container over partitioned views (``scheduler.legacy``): it is
rebuilt the same way, its views written afresh. ``pfsmount datum shell``/``datum run`` run
the result on the user's terminal (``pfsmount.workbench.replay``). Nothing here runs a datum or
changes a job.
"""

from __future__ import annotations

import re
import shutil
import uuid

import msgspec

from pfsmount.errors import Conflict, InvalidArgument, NotFound
from scheduler.datums import datums
from scheduler.engine import Scheduler
from scheduler.records import TERMINAL, Job, Pipeline
from scheduler.wire import DatumInfo, DatumState, DatumTask

_FAILED = re.compile(r"^datum ([0-9a-f]+) failed after")
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def _finished(s: Scheduler, pipeline: Pipeline, job_id: str | None) -> list[Job]:
    """The job asked for, or the pipeline's finished jobs, newest first."""
    if job_id is not None:
        job = s.inspect_job(job_id)
        if job.pipeline != pipeline.name:
            raise NotFound(f"job {job_id} is not a job of pipeline {pipeline.name}")
        if job.state not in TERMINAL:
            raise Conflict(f"job {job_id} is {job.state}; wait for it to finish")
        jobs = [job]
    else:
        jobs = [j for j in s.list_jobs(pipeline.name) if j.state in TERMINAL and j.started]
        if not jobs:
            raise NotFound(f"pipeline {pipeline.name} has no finished job")
    return jobs


def _units(s: Scheduler, pipeline: Pipeline, job: Job) -> list[DatumTask]:
    """The tasks of a job's datums (1.x: containers), rebuilt as the job ran them."""
    if job.version != pipeline.version:
        raise Conflict(f"job {job.id} ran version {job.version} of pipeline {pipeline.name}, "
                       f"which is now at version {pipeline.version}: that spec is gone")
    spec = pipeline.spec
    if spec.v1 is None:
        return [s.jobs.datum_task(job, spec, d) for d in datums(s.pfs, spec.tree, job.inputs)]
    plan, prev = s.jobs.v1_plan(job, spec)
    return [s.jobs.shard_task(job, spec, sh, prev) for sh in plan.shards]


def list_datums(s: Scheduler, name: str, job_id: str | None = None) -> list[DatumInfo]:
    """The datums of a job (the last finished one by default) and how each ended."""
    pipeline = s.inspect_pipeline(name)
    job = _finished(s, pipeline, job_id)[0]
    out = []
    for d in _units(s, pipeline, job):
        with s.state.read() as scope:
            done = s.records.datum(scope, name, pipeline.spec.digest, d.datum)
        log = s.logs / name / job.id / f"{d.datum}.log"
        state: DatumState = ("success" if done is not None and done.job == job.id else
                             "skipped" if done is not None else
                             "failed" if log.exists() else "not run")
        out.append(DatumInfo(id=d.datum, job=job.id, state=state, files=d.files))
    return out


def _pick(s: Scheduler, pipeline: Pipeline, datum: str | None, job_id: str | None
          ) -> DatumTask:
    """The datum asked for (an id or a unique prefix of one) in the newest finished job
    that has it; by default the failed datum of the last failed job, else the first datum
    of the last job."""
    jobs = _finished(s, pipeline, job_id)
    if datum is None:
        failed = [j for j in jobs if j.state == "failure" and _FAILED.match(j.error)]
        job = failed[0] if failed else jobs[0]
        found = _units(s, pipeline, job)
        match = _FAILED.match(job.error)
        chosen = [d for d in found if match and d.datum == match[1]] or found[:1]
        if not chosen:
            raise NotFound(f"job {job.id} of pipeline {pipeline.name} has no datum")
        return chosen[0]
    for job in jobs:
        if job.version != pipeline.version:
            continue
        hits = [d for d in _units(s, pipeline, job) if d.datum.startswith(datum)]
        if len(hits) > 1:
            raise InvalidArgument(f"datum {datum} is ambiguous: give more of its id")
        if hits:
            return hits[0]
    raise NotFound(f"datum {datum} not found in the finished jobs of pipeline {pipeline.name}")


def reproduce(s: Scheduler, name: str, datum: str | None = None,
              job_id: str | None = None) -> DatumTask:
    """The task of one datum of a finished job: its inputs bound as the runner binds them
    (the mount, or copies the daemon keeps until ``forget``), the same env and command."""
    if datum is not None and not re.fullmatch(r"[0-9a-f]{1,32}", datum):
        raise InvalidArgument(f"datum {datum} is not a datum id (hex, as `datum list` "
                              "shows)")
    t = _pick(s, s.inspect_pipeline(name), datum, job_id)
    token = uuid.uuid4().hex
    scratch = s.work / "reproduce" / token
    binds = s.local.materialize(t, scratch)
    return msgspec.structs.replace(
        t, binds=[(str(h), inside) for h, inside in binds],
        hidden=[str(p) for p in s.local.hidden], scratch=token if scratch.exists() else "")


def forget(s: Scheduler, token: str) -> None:
    """Remove the copies a reproduction made."""
    if not _TOKEN.match(token):
        raise InvalidArgument(f"{token} names no reproduction")
    shutil.rmtree(s.work / "reproduce" / token, ignore_errors=True)
