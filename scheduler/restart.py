"""``pfsmount datum restart JOB DATUM``: run one failed datum of a failed job again and, once
none of the job's datums is left failed, make the job's output commit as the job would have
(the job becomes ``success``, after its egress if it has one; pipelines downstream run on it
as on any output).

How it relates to Pachyderm's ``pachctl restart datum <pipeline>@<job> <paths>``: that one
restarts a *stuck* datum of a *running* job and, by its documentation, "does not solve failed
datums" (a datum that fails fails again; ``transform.err_cmd`` is Pachyderm's way to let a
job through them). Here a datum's tries have ended when its job has, so the restart that
makes sense is of a failed datum of a finished job, after its cause was fixed outside the
datum (a flaky service, a full disk, a fixed program on the host: the spec itself is not
changed, or the job's version is gone). A stuck datum of a running job is ended by its
``datum_timeout``, or by ``pfsmount job stop``.

Only the pipeline's newest job, and only a 2.x job (a 1.x job's containers build on the
previous output), may be restarted: an older job's output would put the branch back in
time. Nothing here decides how a datum runs (``scheduler.jobs`` and its executor do).
"""

from __future__ import annotations

import threading

from pfsmount.errors import Conflict, InvalidArgument, PfsError
from pfsmount.pfs.state import Entry, Staged
from scheduler.datums import datums
from scheduler.engine import Scheduler
from scheduler.jobs import failure_note
from scheduler.records import TERMINAL, DatumResult, Job
from scheduler.reproduce import Seen, find, job_units


def _newest(s: Scheduler, job: Job) -> None:
    """Refuse unless ``job`` is the newest job of its pipeline and none of it runs."""
    jobs = s.list_jobs(job.pipeline)
    busy = [j for j in jobs if j.state not in TERMINAL]
    if busy:
        raise Conflict(f"pipeline {job.pipeline} has job {busy[0].id} {busy[0].state}; "
                       "restart a datum once it has ended")
    if jobs and jobs[0].id != job.id:
        raise Conflict(f"job {job.id} is not pipeline {job.pipeline}'s last job (job "
                       f"{jobs[0].id} came after it): its output would go back in time")


def restart(s: Scheduler, job_id: str, datum: str) -> Job:
    """Rerun one failed (or stopped) datum of a failed job; the job as it is afterwards.
    Holds the pipeline's run lock throughout: a job of the pipeline, or another restart,
    waits (and then sees this one's records whole)."""
    with s.run_lock(s.inspect_job(job_id).pipeline):
        return _restart(s, job_id, datum)


def _restart(s: Scheduler, job_id: str, datum: str) -> Job:
    job, spec, units = job_units(s, job_id)
    if job.spec is not None or spec.v1 is not None:
        raise InvalidArgument(f"job {job.id} is a 1.x job: datum restart takes 2.x jobs' "
                              "datums (rerun a 1.x job with `pfsmount pipeline update "
                              "--reprocess`)")
    if job.state != "failure":
        raise Conflict(f"job {job.id} is {job.state}: datum restart reruns a failed datum "
                       "of a failed job")
    _newest(s, job)
    t = find(units, datum, f"job {job.id}")
    seen = Seen(s, spec, job)
    state, _ = seen(t.datum)
    if state not in ("failed", "stopped"):
        raise Conflict(f"datum {t.datum} of job {job.id} did not fail ({state})")
    [(outcome, staged)] = s.executor.run([t], 1)  # to its end: the executor cleans up
    result = DatumResult(job=job.id, outputs=[], started=outcome.started,
                         seconds=outcome.seconds)
    if outcome.state == "recovered":  # its err_cmd let it through, as in a job
        job.failed, job.recovered = job.failed - 1, job.recovered + 1
        result.ended = "recovered"  # replaces its failure record: one write
        done: list[tuple[str, DatumResult, Staged | None]] = [(t.datum, result, None)]
    elif outcome.state != "success" or staged is None:
        job.error = f"datum {t.datum} failed after {t.tries} tries{failure_note(outcome)}"
        result.ended = "failed"
        s.jobs.save_results(job, spec, spec.digest, [(t.datum, result, None)])
        return job
    else:
        result.outputs = [(p, Entry(o.kind, o.size, o.mode, o.mtime, o.ref))
                          for p, o in outcome.outputs]
        job.failed, job.processed = job.failed - 1, job.processed + 1
        done = [(t.datum, result, staged)]  # its failure record goes in the same write
    left = [u.datum for u in units if u.datum != t.datum
            and seen(u.datum)[0] not in ("success", "skipped", "recovered")]
    if left:
        job.error = f"{len(left)} datum(s) of job {job.id} still failed, datum {left[0]} " \
                    f"first (`pfsmount datum list {job.id}`)"
    s.jobs.save_results(job, spec, spec.digest, done)
    if left:
        return job
    _newest(s, job)  # no job came while the datum ran
    found = datums(s.pfs, spec.tree, job.inputs)
    with s.state.read() as scope:
        outputs = {d.id: s.records.datum(scope, spec.name, spec.digest, d.id) for d in found}
    try:
        job.error = ""
        s.jobs.commit_output(job, spec, found, {
            d: r.outputs for d, r in outputs.items() if r is not None})
        if spec.egress:  # the output commit left it "egressing": copied now, as in a job
            s.egress(job, spec, threading.Event())
    except PfsError as e:  # two datums wrote one path, say: the job stays failed
        job.state, job.error = "failure", e.message
    s.jobs.save_results(job, spec, spec.digest, [])  # waiters look again
    return job
