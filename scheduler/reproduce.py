"""A job's datums as a user sees them: ``datum list`` (each datum's state, time, inputs and
output size), ``datum list -f`` (a dry run: the datums a spec would make against the current
heads), ``datum inspect``, and one datum of a finished job rebuilt as its runner saw it
(which datum: the failed one by default; its inputs bound the same way, its environment,
working directory, command and image). A 1.x job's unit is a container over partitioned
views (``scheduler.legacy``): it is rebuilt the same way, its views written afresh.
``pfsmount datum shell``/``datum run`` run the result on the user's terminal
(``pfsmount.workbench.replay``). Nothing here runs a datum or changes a job
(``scheduler.restart`` reruns a failed one).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path

import msgspec

from pfsmount.errors import Conflict, InvalidArgument, NotFound
from scheduler.datums import datums
from scheduler.engine import Scheduler
from scheduler.executor import LOG_TAIL
from scheduler.records import TERMINAL, DatumResult, Job, Pipeline
from scheduler.spec import Spec, parse_specs
from scheduler.wire import DatumDetail, DatumInfo, DatumState, DatumTask

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
    return _tasks(s, pipeline.spec, job)


def _tasks(s: Scheduler, spec: Spec, job: Job) -> list[DatumTask]:
    if spec.v1 is None:
        return [s.jobs.datum_task(job, spec, d) for d in datums(s.pfs, spec.tree, job.inputs)]
    plan, prev = s.jobs.v1_plan(job, spec)
    return [s.jobs.shard_task(job, spec, sh, prev) for sh in plan.shards]


def job_units(s: Scheduler, job_id: str) -> tuple[Job, Spec, list[DatumTask]]:
    """A job (by id), the spec it ran and its units of work."""
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise InvalidArgument(f"{job_id} is not a job id (32 hex digits, as `job list` "
                              "shows)")
    job = s.inspect_job(job_id)
    if job.spec is not None:  # a one-off (1.x create-job) job: its spec is its own
        return job, job.spec, _tasks(s, job.spec, job)
    pipeline = s.inspect_pipeline(job.pipeline)
    return job, pipeline.spec, _units(s, pipeline, job)


class Seen:
    """How each datum of one job ended, read from the datum records (a datum that left no
    output has one under its job saying how it ended; a log says only that it started)."""

    def __init__(self, s: Scheduler, spec: Spec, job: Job) -> None:
        self.s, self.spec, self.job = s, spec, job
        self.digest = spec.digest

    def log(self, datum: str) -> Path:
        return self.s.logs / self.spec.name / self.job.id / f"{datum}.log"

    def __call__(self, datum: str) -> tuple[DatumState, DatumResult | None]:
        """The datum's state in the job, and the run it shows (its own, or the one a
        skipped datum reuses)."""
        with self.s.state.read() as scope:
            failed = self.s.records.failure(scope, self.spec.name, self.job.id, datum)
            done = self.s.records.datum(scope, self.spec.name, self.digest, datum)
        if failed is not None:  # ended here without output: how, its record says
            return failed.ended or "failed", failed
        if done is not None and (done.job == self.job.id or self.log(datum).exists()):
            return "success", done  # ran here (a later job may have run it again since)
        if done is not None:
            return "skipped", done
        return "not run", None

    def info(self, t: DatumTask) -> DatumInfo:
        state, run = self(t.datum)
        started, seconds, size = _timing(state, run)
        return DatumInfo(id=t.datum, pipeline=self.spec.name, job=self.job.id, state=state,
                         files=t.files, started=started, seconds=seconds, output_bytes=size)


def _timing(state: DatumState, run: DatumResult | None
            ) -> tuple[float | None, float | None, int | None]:
    """When the run started, how long it took (unknown for a run before either was
    recorded) and the bytes it wrote (none for a failed one)."""
    if run is None:
        return None, None, None
    return (run.started or None, run.seconds if run.started else None,
            None if state == "failed" else sum(e.size for _, e in run.outputs))


def list_datums(s: Scheduler, name: str | None, job_id: str | None = None
                ) -> list[DatumInfo]:
    """The datums of a job (by default the pipeline ``name``'s last finished one) and how
    each ended."""
    if job_id is not None:
        job, spec, units = job_units(s, job_id)
        if name is not None and job.pipeline != name:
            raise NotFound(f"job {job_id} is not a job of pipeline {name}")
    elif name is not None:
        pipeline = s.inspect_pipeline(name)
        job, spec = _finished(s, pipeline, None)[0], pipeline.spec
        units = _units(s, pipeline, job)
    else:
        raise InvalidArgument("missing argument 'job'")
    seen = Seen(s, spec, job)
    return [seen.info(t) for t in units]


def _check_datum(datum: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{1,32}", datum):
        raise InvalidArgument(f"datum {datum} is not a datum id (hex, as `datum list` "
                              "shows)")


def find(units: list[DatumTask], datum: str, where: str) -> DatumTask:
    """The unit whose id is ``datum`` or starts with it."""
    _check_datum(datum)
    hits = [t for t in units if t.datum.startswith(datum)]
    if len(hits) > 1:
        raise InvalidArgument(f"datum {datum} is ambiguous: give more of its id")
    if not hits:
        raise NotFound(f"datum {datum} not found in {where}")
    return hits[0]


def inspect_datum(s: Scheduler, job_id: str, datum: str) -> DatumDetail:
    """One datum of a job: its state, inputs, time, what it wrote and its log's tail."""
    job, spec, units = job_units(s, job_id)
    t = find(units, datum, f"job {job_id}")
    seen = Seen(s, spec, job)
    state, run = seen(t.datum)
    tail = ""
    if seen.log(t.datum).exists():
        with open(seen.log(t.datum), "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL))
            tail = f.read().decode(errors="replace")
    started, seconds, size = _timing(state, run)
    return DatumDetail(id=t.datum, pipeline=spec.name, job=job.id, state=state, files=t.files,
                       started=started, seconds=seconds, output_bytes=size,
                       ran_in=run.job if run else "",
                       outputs=[(path, e.size) for path, e in run.outputs] if run else [],
                       log=tail)


def plan(s: Scheduler, spec_text: str) -> list[DatumInfo]:
    """A dry run: the datums each pipeline of a spec file would make against the current
    heads of its inputs, and whether an earlier job of the same spec already ran each (the
    pipeline need not exist). Nothing is created or run."""
    out: list[DatumInfo] = []
    planned: set[str] = set()
    for spec in parse_specs(spec_text):
        if spec.v1 is not None:
            raise InvalidArgument(f"pipeline {spec.name}: a dry run takes 2.x specs (a 1.x "
                                  "spec's containers depend on its previous job)")
        with s.state.read() as scope:  # what create or update would refuse, refused
            exists = s.records.find_pipeline(scope, spec.name) is not None
        s.check_pipeline(spec, update=exists, planned=planned)
        planned.add(spec.name)
        found = datums(s.pfs, spec.tree, s._heads(spec))
        with s.state.read() as scope:
            for d in found:
                done = s.records.datum(scope, spec.name, spec.digest, d.id)
                out.append(DatumInfo(
                    id=d.id, pipeline=spec.name, job="",
                    state="would skip" if done is not None else "would run",
                    files=[f"{f.input}={f.repo}@{f.commit}:{f.path}" for f in d.files]))
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
        if job.version == pipeline.version:
            with contextlib.suppress(NotFound):
                return find(_units(s, pipeline, job), datum, f"job {job.id}")
    raise NotFound(f"datum {datum} not found in the finished jobs of pipeline {pipeline.name}")


def reproduce(s: Scheduler, name: str, datum: str | None = None,
              job_id: str | None = None) -> DatumTask:
    """The task of one datum of a finished job: its inputs bound as the runner binds them
    (the mount, or copies the daemon keeps until ``forget``), the same env and command."""
    if datum is not None:
        _check_datum(datum)
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
