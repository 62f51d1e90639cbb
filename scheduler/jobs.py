"""Running one job: its units of work as ``DatumTask``s through a ``DatumExecutor``, and
its output commit.

A 2.x job's units are its datums (``scheduler.datums``); a 1.x job's are containers over
partitioned views (``scheduler.legacy`` plans them, with ``/pfs/prev`` and the previous
output the job builds on). Both meet in ``run_all``: units an earlier job of the same spec
ran are reused, the rest run through the executor, and each finished unit's outputs land
with its datum record. The union of all outputs (1.x: merged into the previous output)
becomes the output commit, sealed together with the job's record. Owns none of the job's
lifecycle (``scheduler.engine`` creates, queues, stops and records jobs) and runs nothing
itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Literal

from pfsmount.errors import Conflict, NotFound
from pfsmount.pfs import Commit, Pfs
from pfsmount.pfs.state import KIND_FILE, KIND_LINK, Change, Entry, Scope, Staged
from scheduler import legacy
from scheduler.datums import Datum, datums, no_datums
from scheduler.environment import datum_env, inside
from scheduler.executor import DatumExecutor, DatumOutcome, DatumTask, InputRef, Piece
from scheduler.records import DatumResult, Job, Records
from scheduler.spec import Spec

log = logging.getLogger("pfsmount.scheduler")
_TRY = re.compile(r"^\[pfsmount\] datum \S+ try \d+ of \d+$", re.M)  # starts a try's log
_Outputs = list[tuple[str, Entry]]


class Jobs:
    """Runs jobs over the model ``pfs``, keeping datum results in ``records``; ``saved``
    is told whenever a job's record changed (waiters look again)."""

    def __init__(self, pfs: Pfs, records: Records, executor: DatumExecutor,
                 saved: Callable[[], None]) -> None:
        self.pfs = pfs
        self.state = pfs.state
        self.records = records
        self.executor = executor
        self._saved = saved

    def run(self, job: Job, spec: Spec, cancel: threading.Event) -> None:
        """Run ``job``; its state, counts, error and output say how it went (``cancel``
        set: it was stopped)."""
        if spec.v1 is not None:
            self._run_v1(job, spec, cancel)
            return
        found = datums(self.pfs, spec.tree, job.inputs)
        if not found:  # it runs, as Pachyderm's does, and says why it has nothing to do
            job.error = no_datums(self.pfs, spec.tree, job.inputs)
        results = self.run_all(job, spec, [
            (d.id, functools.partial(self.datum_task, job, spec, d)) for d in found], cancel)
        if results is None:
            return
        self.commit_output(job, spec, found, results)

    def commit_output(self, job: Job, spec: Spec, found: list[Datum],
                      results: dict[str, _Outputs]) -> None:
        """A 2.x job's output commit from every datum's outputs (also once ``datum restart``
        made a failed job's datums whole); the job marked done with it."""
        self._commit_output(job, spec, self._union(spec, found, results))

    # -- tasks -------------------------------------------------------------------------------

    def datum_task(self, job: Job, spec: Spec, d: Datum) -> DatumTask:
        """A datum's task: each input file set at ``/pfs/<input>[/path]``, in the
        environment Pachyderm gives a datum (``scheduler.environment``); an input with
        ``empty_files`` as one view of its files, each empty."""
        inputs = [InputRef(name=f.input, repo=f.repo, commit=f.commit, path=f.path,
                           hash=f.hash, type=f.type, inside=inside(f))
                  for f in d.files if not f.empty]
        empty: dict[str, InputRef] = {}  # one view per input: its files' binds would overlap
        for f in (f for f in d.files if f.empty):
            view = empty.setdefault(f.input, InputRef(
                name=f.input, repo=f.repo, commit=f.commit, path="/", hash="", type="dir",
                inside=f"/pfs/{f.input}", pieces=[]))
            assert view.pieces is not None
            view.pieces.extend(
                Piece(i.path, i.type == "symlink", bytes.fromhex(i.hash) if i.hash else
                      (i.target or "").encode(errors="surrogateescape"), 0, 0)
                for i in self.pfs.files.walk(f"{f.repo}@{f.commit}", f.path))
        inputs += empty.values()
        return self._task(job, spec, d.id, [f"{f.input}={f.repo}@{f.commit}:{f.path}"
                                            for f in d.files],
                          inputs, datum_env(d.files, d.id, job.id, spec.name))

    def shard_task(self, job: Job, spec: Spec, shard: legacy.Shard, prev: str | None
                   ) -> DatumTask:
        """A 1.x container's task: its views at ``/pfs/<input>`` (a whole commit, or only
        the pieces its partition shows), the previous output at ``/pfs/prev``."""
        env = {"PACH_OUTPUT_COMMIT_ID": "", **({"PACH_PREV_COMMIT_ID": prev} if prev else {})}
        inputs = []
        for v in shard.views:
            inside = f"/pfs/{v.input.name}"
            pieces = None if v.whole else [
                Piece(p.path, p.entry.kind == KIND_LINK, p.entry.ref, p.start, p.end)
                for p in v.pieces]
            inputs.append(InputRef(name=v.input.name, repo=v.input.repo, commit=v.commit,
                                   path="/", hash="", type="dir", inside=inside,
                                   pieces=pieces))
            env[v.input.name] = inside
            env[f"PACH_{re.sub(r'[^A-Z0-9]', '_', v.input.name.upper())}_COMMIT_ID"] = v.commit
        if prev is not None:
            inputs.append(InputRef(name="prev", repo=spec.name, commit=prev, path="/",
                                   hash="", type="dir", inside="/pfs/prev"))
        files = [f"{v.input.name}={v.input.repo}@{v.commit}"
                 + ("" if v.whole else f" ({len(v.pieces)} pieces)") for v in shard.views]
        return self._task(job, spec, shard.id, files, inputs, env)

    @staticmethod
    def _task(job: Job, spec: Spec, unit_id: str, files: list[str], inputs: list[InputRef],
              env: dict[str, str]) -> DatumTask:
        """A unit of work's task, over its inputs' ``env``. No ``stdin`` lines, no stdin:
        a Docker runner gives one through ``sh``, which an image need not have."""
        t = spec.transform
        return DatumTask(
            pipeline=spec.name, job=job.id, datum=unit_id, files=files, inputs=inputs,
            cmd=t.cmd, stdin="".join(f"{x}\n" for x in t.stdin),
            env={**t.env, "PACH_JOB_ID": job.id, "PACH_DATUM_ID": unit_id,
                 "PPS_PIPELINE_NAME": spec.name, "PFS_OUT": "/pfs/out", **env},
            image=t.image, working_dir=t.working_dir, timeout=spec.datum_timeout,
            tries=spec.datum_tries, accept=list(t.accept_return_code),
            err_cmd=list(t.err_cmd), err_stdin="".join(f"{x}\n" for x in t.err_stdin))

    # -- running units -----------------------------------------------------------------------

    def run_all(self, job: Job, spec: Spec, units: list[tuple[str, Callable[[], DatumTask]]],
                cancel: threading.Event) -> dict[str, _Outputs] | None:
        """Run a job's units of work (datums, or 1.x containers) ``parallelism`` at a time,
        reusing those an earlier job of the same spec ran (unless ``reprocess_spec`` is
        every_job): each one's outputs by its id, or None when the job failed, ran past its
        ``job_timeout`` or was stopped (its state says which)."""
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self.executor.cancel(job.id)

        deadline = _deadline(job, spec, expire)
        job.datums = len(units)
        digest = spec.digest  # a hash of the spec: once per job, not once per datum
        results: dict[str, _Outputs] = {}
        todo: list[DatumTask] = []
        with self.state.read() as scope:
            for unit_id, task in units:
                done = None if job.reprocess or spec.reprocess_spec == "every_job" else \
                    self.records.datum(
                    scope, spec.name, digest, unit_id)
                # A result whose output content is gone (a repair dropped it) is run again,
                # never committed as a file nobody can read.
                if done is not None and all(self.state.has_content(scope, e)
                                            for _, e in done.outputs):
                    results[unit_id] = done.outputs
                    job.skipped += 1
                else:
                    todo.append(task())
        self.save_results(job, spec, digest, [])
        failure: str | None = None
        unsaved: list[tuple[str, DatumResult, Staged | None]] = []
        last_save = time.monotonic()
        outcomes = self.executor.run(todo, spec.parallelism)
        if cancel.is_set() or expired.is_set():  # before the executor took the tasks
            self.executor.cancel(job.id)
        for outcome, staged in outcomes:
            if outcome.state != "success" or staged is None:
                if outcome.state == "recovered":  # its err_cmd exited 0: no output
                    job.recovered += 1
                else:
                    job.failed += 1
                    failure = failure or f"datum {outcome.datum} failed after " \
                                         f"{spec.datum_tries} tries{failure_note(outcome)}"
                # Kept for `datum list`/`datum restart`, saying how it ended: a datum a
                # job_timeout or a stop ended is "stopped", never guessed from its log.
                ended: Literal["failed", "stopped", "recovered"] = \
                    "recovered" if outcome.state == "recovered" else \
                    "stopped" if outcome.state == "stopped" else "failed"
                unsaved.append((outcome.datum, DatumResult(
                    job=job.id, outputs=[], started=outcome.started,
                    seconds=outcome.seconds, ended=ended), None))
            else:
                outputs = [(p, Entry(o.kind, o.size, o.mode, o.mtime, o.ref))
                           for p, o in outcome.outputs]
                results[outcome.datum] = outputs
                unsaved.append((outcome.datum, DatumResult(
                    job=job.id, outputs=outputs, started=outcome.started,
                    seconds=outcome.seconds), staged))
                job.processed += 1
            if time.monotonic() - last_save > 0.5:  # progress and results, in batches
                self.save_results(job, spec, digest, unsaved)
                last_save = time.monotonic()
        self.save_results(job, spec, digest, unsaved)
        if deadline is not None:
            deadline.cancel()
        if expired.is_set() and not cancel.is_set():
            finished = job.processed + job.skipped + job.recovered
            job.state, job.error = "failure", (
                f"job timed out: it ran past its job_timeout of {spec.job_timeout:g}s with "
                f"{finished} of {job.datums} datums done; the rest were stopped")
            return None
        if cancel.is_set():
            job.state = "killed"
            return None
        if failure is not None:
            job.state, job.error = "failure", failure
            return None
        return results

    def save_results(self, job: Job, spec: Spec, digest: str,
                     unsaved: list[tuple[str, DatumResult, Staged | None]]) -> None:
        """Record finished datums (so a rerun skips them), with their outputs' content
        (failed ones, with no content: under their job), and the job's progress, in one
        transaction: one per datum would cost more than running it. A datum that succeeded
        loses its job's failure record in the same write (``datum restart``): never seen in
        neither state, nor in both."""

        def record(scope: Scope) -> None:
            for datum_id, result, staged in unsaved:
                if staged is None:
                    self.records.put_failure(scope, spec.name, datum_id, result)
                else:
                    self.records.delete_failure(scope, spec.name, result.job, datum_id)
                    self.records.put_datum(scope, spec.name, digest, datum_id, result)
            self.records.put_job(scope, job)

        self.state.land([staged for _, _, staged in unsaved if staged is not None], record,
                        durable=False)
        unsaved.clear()
        self._saved()

    # -- the output commit -------------------------------------------------------------------

    def _commit_output(self, job: Job, spec: Spec, changes: dict[str, Change],
                       base: str | None = None) -> None:
        """The job's output commit, and the job marked done in the same transaction: a job
        left "running" beside its output would run again on restart and commit it twice.
        With an egress it is ``egressing`` until the engine has copied the output."""

        def done(scope: Scope, commit: Commit) -> None:
            job.output = f"{spec.name}@{commit.id}"
            job.state = "egressing" if spec.egress else "success"
            job.finished = time.time()
            self.records.put_job(scope, job)

        self.pfs.files.write_snapshot(spec.name, spec.output_branch, changes,
                                      provenance=self._provenance(job), base=base, record=done)

    def _provenance(self, job: Job) -> list[str]:
        out: dict[str, None] = {}
        for key, commit_id in sorted(job.inputs.items()):
            repo = key.split("@", 1)[0]
            out[f"{repo}@{commit_id}"] = None
            for p in self.pfs.commits.inspect(f"{repo}@{commit_id}").provenance:
                out[p] = None
        return list(out)

    def _union(self, spec: Spec, found: list[Datum], results: dict[str, _Outputs]
               ) -> dict[str, Change]:
        """All datums' outputs; a path written twice fails (2.x) or is concatenated (1.x)."""
        owner: dict[str, str] = {}
        union: dict[str, list[Entry]] = {}
        for d in found:
            for path, entry in results.get(d.id, []):  # none: a recovered datum
                if path in owner and not spec.legacy:
                    raise Conflict(f"datums {owner[path]} and {d.id} both wrote /{path}")
                owner.setdefault(path, d.id)
                union.setdefault(path, []).append(entry)
        changes: dict[str, Change] = {}
        staged = Staged()
        for path, entries in union.items():
            changes[path] = entries[0] if len(entries) == 1 else self._concat(staged, entries)
        if not staged.empty:
            self.state.land([staged])
        return changes

    def _concat(self, staged: Staged, entries: list[Entry]) -> Entry:
        data = b"".join(b"".join(self.pfs.files.read(e)) for e in entries)
        return self.state.stage_bytes(staged, data, entries[0].mode)

    # -- 1.x jobs (scheduler.legacy says what they mean) -------------------------------------

    def _parent_job(self, job: Job, spec: Spec) -> Job | None:
        """The job a 1.x job continues: the latest successful one of this pipeline version,
        if it saw the same commit of every non-incremental input (else the job starts
        over, as 1.x's ``inputsAreParental``)."""
        assert spec.v1 is not None
        if job.reprocess:
            return None
        with self.state.read() as scope:
            done = sorted((j for j in self.records.jobs(scope)
                           if j.pipeline == spec.name and j.state == "success" and j.output
                           and j.version == job.version and j.created < job.created
                           and j.id != job.id), key=lambda j: j.created, reverse=True)
        if not done:
            return None
        fixed = [f"{i.repo}@{i.branch}" for i in spec.v1.inputs
                 if i.method.incremental == "NONE"]
        last = done[0]
        return last if all(last.inputs.get(k) == job.inputs.get(k) for k in fixed) else None

    def v1_plan(self, job: Job, spec: Spec) -> tuple[legacy.Plan, str | None]:
        """A 1.x job's containers, and the previous output commit they build on (also what
        ``pfsmount datum shell`` rebuilds for a finished job)."""
        assert spec.v1 is not None
        parent = self._parent_job(job, spec)
        prev = parent.output.split("@", 1)[1] if parent and parent.output else None
        return legacy.plan(self.pfs, spec.v1, job.inputs, parent.inputs if parent else None,
                           spec.parallelism, prev), prev

    def _run_v1(self, job: Job, spec: Spec, cancel: threading.Event) -> None:
        plan, prev = self.v1_plan(job, spec)
        if plan.idle:
            log.info("job %s of pipeline %s runs nothing: %s", job.id, spec.name, plan.idle)
            job.state, job.error = "success", f"nothing to run: {plan.idle}"
            return
        results = self.run_all(job, spec, [
            (s.id, functools.partial(self.shard_task, job, spec, s, prev))
            for s in plan.shards],
            cancel)
        if results is None:
            return
        changes = self._v1_output(spec, prev, [results[s.id] for s in plan.shards])
        self._commit_output(job, spec, changes, base=prev)

    def _v1_output(self, spec: Spec, prev: str | None, outputs: list[_Outputs]
                   ) -> dict[str, Change]:
        """What a 1.x job changes in its previous output ``prev``: each file written is
        appended to its previous content (with ``overwrite``: replaces it), the writes of
        several containers to one path concatenated in container order, as 1.x merged them."""
        assert spec.v1 is not None
        written: dict[str, list[Entry]] = {}
        for out in outputs:
            for path, entry in out:
                written.setdefault(path, []).append(entry)
        changes: dict[str, Change] = {}
        staged = Staged()
        for path, entries in written.items():
            if prev is not None and not spec.v1.overwrite:
                with contextlib.suppress(NotFound):
                    before = self.pfs.files.inspect(f"{spec.name}@{prev}", path)
                    if before.type == "file" and before.size:
                        entries = [legacy.entry_of(before), *entries]
            files = all(e.kind == KIND_FILE for e in entries)
            changes[path] = entries[0] if len(entries) == 1 or not files else \
                self._concat(staged, entries)
        if not staged.empty:
            self.state.land([staged])
        return changes


def _deadline(job: Job, spec: Spec, expire: Callable[[], None]) -> threading.Timer | None:
    """A timer that calls ``expire`` once the job has run ``job_timeout`` seconds (counted
    from its start, as Pachyderm does), or None without one."""
    if spec.job_timeout is None:
        return None
    timer = threading.Timer(spec.job_timeout - (time.time() - (job.started or time.time())),
                            expire)
    timer.daemon = True
    timer.start()
    return timer


def failure_note(outcome: DatumOutcome) -> str:
    """How a datum's last try ended, for the job's error: a first line that stands alone
    (``commit wait`` shows only it) with the exit and the last lines the datum printed,
    then the log's tail."""
    if outcome.state == "stopped":
        return "job stopped"
    tail = outcome.log
    last_try = _TRY.split(tail)[-1].splitlines()
    said = [line.strip() for line in last_try
            if line.strip() and not line.startswith("[pfsmount]")]
    how = "timed out" if "[pfsmount] datum timed out" in last_try else \
        f"exit code {outcome.code}"
    summary = " | ".join(said[-3:])
    if len(summary) > 300:
        summary = "..." + summary[-297:]
    return (f" ({how}): {summary}" if summary else f" ({how}) with no output") + \
        f"\nlog tail:\n{tail}"
