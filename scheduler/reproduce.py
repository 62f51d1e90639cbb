"""One datum of a finished job, rebuilt as its runner saw it: which datum (the failed one
by default), its inputs bound the same way, its environment, working directory, command and
image. ``pfsmount datum shell``/``datum run`` run the result on the user's terminal
(``scheduler.replay``). Nothing here runs a datum or changes a job.
"""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from pathlib import Path

from pfsmount.errors import Conflict, InvalidArgument, NotFound
from scheduler.datums import Datum, datums
from scheduler.engine import Scheduler
from scheduler.records import TERMINAL, Job, Pipeline
from scheduler.wire import DatumInfo, DatumState, DatumTask

_FAILED = re.compile(r"^datum ([0-9a-f]+) failed after")
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def _pipeline(s: Scheduler, name: str) -> Pipeline:
    pipeline = s.inspect_pipeline(name)
    if pipeline.spec.v1 is not None:
        raise InvalidArgument(f"pipeline {name} is in the 1.x form: its jobs run containers "
                              "over partitioned views, not datums one can reproduce alone")
    return pipeline


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


def _datums(s: Scheduler, pipeline: Pipeline, job: Job) -> list[Datum]:
    if job.version != pipeline.version:
        raise Conflict(f"job {job.id} ran version {job.version} of pipeline {pipeline.name}, "
                       f"which is now at version {pipeline.version}: that spec is gone")
    return datums(s.pfs, pipeline.spec.input, job.inputs)


def _files(d: Datum) -> list[str]:
    return [f"{f.input}={f.repo}@{f.commit}:{f.path}" for f in d.files]


def list_datums(s: Scheduler, name: str, job_id: str | None = None) -> list[DatumInfo]:
    """The datums of a job (the last finished one by default) and how each ended."""
    pipeline = _pipeline(s, name)
    job = _finished(s, pipeline, job_id)[0]
    out = []
    for d in _datums(s, pipeline, job):
        with s.meta.read() as txn:
            done = s.records.datum(txn, name, pipeline.spec.digest, d.id)
        log = s.logs / name / job.id / f"{d.id}.log"
        state: DatumState = ("success" if done is not None and done.job == job.id else
                             "skipped" if done is not None else
                             "failed" if log.exists() else "not run")
        out.append(DatumInfo(id=d.id, job=job.id, state=state, files=_files(d)))
    return out


def _pick(s: Scheduler, pipeline: Pipeline, datum: str | None, job_id: str | None
          ) -> tuple[Job, Datum]:
    """The datum asked for (an id or a unique prefix of one) in the newest finished job
    that has it; by default the failed datum of the last failed job, else the first datum
    of the last job."""
    jobs = _finished(s, pipeline, job_id)
    if datum is None:
        failed = [j for j in jobs if j.state == "failure" and _FAILED.match(j.error)]
        job = failed[0] if failed else jobs[0]
        found = _datums(s, pipeline, job)
        match = _FAILED.match(job.error)
        chosen = [d for d in found if match and d.id == match[1]] or found[:1]
        if not chosen:
            raise NotFound(f"job {job.id} of pipeline {pipeline.name} has no datum")
        return job, chosen[0]
    for job in jobs:
        if job.version != pipeline.version:
            continue
        hits = [d for d in _datums(s, pipeline, job) if d.id.startswith(datum)]
        if len(hits) > 1:
            raise InvalidArgument(f"datum {datum} is ambiguous: give more of its id")
        if hits:
            return job, hits[0]
    raise NotFound(f"datum {datum} not found in the finished jobs of pipeline {pipeline.name}")


def reproduce(s: Scheduler, name: str, datum: str | None = None,
              job_id: str | None = None) -> DatumTask:
    """The task of one datum of a finished job: its inputs bound as the runner binds them
    (the mount, or copies the daemon keeps until ``forget``), the same env and command."""
    if datum is not None and not re.fullmatch(r"[0-9a-f]{1,32}", datum):
        raise InvalidArgument(f"datum {datum} is not a datum id (hex, as `datum list` "
                              "shows)")
    pipeline = _pipeline(s, name)
    job, d = _pick(s, pipeline, datum, job_id)
    spec = pipeline.spec
    token = uuid.uuid4().hex
    scratch = s.work / "reproduce" / token
    binds, env = s.datum_inputs(spec, d, scratch)
    kept = scratch.exists()
    template = s.task(spec, s.unit_env(job, spec, d.id, env), binds, Path(), Path(),
                      threading.Event())
    return DatumTask(
        pipeline=name, job=job.id, datum=d.id, files=_files(d), cmd=template.cmd,
        stdin=template.stdin, env=template.env,
        binds=[(str(h), inside) for h, inside in template.binds],
        working_dir=template.working_dir, image=template.image, timeout=template.timeout,
        hidden=[str(s.work.parent), *([str(s.mountpoint)] if s.mountpoint else [])],
        scratch=token if kept else "")


def forget(s: Scheduler, token: str) -> None:
    """Remove the copies a reproduction made."""
    if not _TOKEN.match(token):
        raise InvalidArgument(f"{token} names no reproduction")
    shutil.rmtree(s.work / "reproduce" / token, ignore_errors=True)
