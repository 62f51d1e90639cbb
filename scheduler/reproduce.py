"""One datum of a finished job, rebuilt as its runner saw it: which datum (the failed one
by default), its inputs bound the same way, its environment, working directory, command and
image. A 1.x job's unit is a container over partitioned views (``scheduler.legacy``): it is
rebuilt the same way, its views written afresh. ``pfsmount datum shell``/``datum run`` run
the result on the user's terminal (``scheduler.replay``). Nothing here runs a datum or
changes a job.
"""

from __future__ import annotations

import functools
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from pfsmount.errors import Conflict, InvalidArgument, NotFound
from scheduler.datums import datums
from scheduler.engine import Scheduler
from scheduler.records import TERMINAL, Job, Pipeline
from scheduler.wire import DatumInfo, DatumState, DatumTask

_FAILED = re.compile(r"^datum ([0-9a-f]+) failed after")
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


class _Unit(NamedTuple):
    """A datum, or a 1.x container: its id, what it reads, and how to bind it."""

    id: str
    files: list[str]
    inputs: Callable[[Path], tuple[list[tuple[Path, str]], dict[str, str]]]


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


def _units(s: Scheduler, pipeline: Pipeline, job: Job) -> list[_Unit]:
    if job.version != pipeline.version:
        raise Conflict(f"job {job.id} ran version {job.version} of pipeline {pipeline.name}, "
                       f"which is now at version {pipeline.version}: that spec is gone")
    spec = pipeline.spec
    if spec.v1 is None:
        return [_Unit(d.id, [f"{f.input}={f.repo}@{f.commit}:{f.path}" for f in d.files],
                      functools.partial(s.datum_inputs, spec, d))
                for d in datums(s.pfs, spec.tree, job.inputs)]
    plan, prev = s.v1_plan(job, spec)
    return [_Unit(sh.id, [f"{v.input.name}={v.input.repo}@{v.commit}"
                          + ("" if v.whole else f" ({len(v.pieces)} pieces)") for v in sh.views],
                  functools.partial(s.shard_inputs, spec, sh, prev)) for sh in plan.shards]


def list_datums(s: Scheduler, name: str, job_id: str | None = None) -> list[DatumInfo]:
    """The datums of a job (the last finished one by default) and how each ended."""
    pipeline = s.inspect_pipeline(name)
    job = _finished(s, pipeline, job_id)[0]
    out = []
    for d in _units(s, pipeline, job):
        with s.state.read() as scope:
            done = s.records.datum(scope, name, pipeline.spec.digest, d.id)
        log = s.logs / name / job.id / f"{d.id}.log"
        state: DatumState = ("success" if done is not None and done.job == job.id else
                             "skipped" if done is not None else
                             "failed" if log.exists() else "not run")
        out.append(DatumInfo(id=d.id, job=job.id, state=state, files=d.files))
    return out


def _pick(s: Scheduler, pipeline: Pipeline, datum: str | None, job_id: str | None
          ) -> tuple[Job, _Unit]:
    """The datum asked for (an id or a unique prefix of one) in the newest finished job
    that has it; by default the failed datum of the last failed job, else the first datum
    of the last job."""
    jobs = _finished(s, pipeline, job_id)
    if datum is None:
        failed = [j for j in jobs if j.state == "failure" and _FAILED.match(j.error)]
        job = failed[0] if failed else jobs[0]
        found = _units(s, pipeline, job)
        match = _FAILED.match(job.error)
        chosen = [d for d in found if match and d.id == match[1]] or found[:1]
        if not chosen:
            raise NotFound(f"job {job.id} of pipeline {pipeline.name} has no datum")
        return job, chosen[0]
    for job in jobs:
        if job.version != pipeline.version:
            continue
        hits = [d for d in _units(s, pipeline, job) if d.id.startswith(datum)]
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
    pipeline = s.inspect_pipeline(name)
    job, d = _pick(s, pipeline, datum, job_id)
    spec = pipeline.spec
    token = uuid.uuid4().hex
    scratch = s.work / "reproduce" / token
    binds, env = d.inputs(scratch)
    kept = scratch.exists()
    template = s.task(spec, s.unit_env(job, spec, d.id, env), binds, Path(), Path(),
                      threading.Event())
    return DatumTask(
        pipeline=name, job=job.id, datum=d.id, files=d.files, cmd=template.cmd,
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
