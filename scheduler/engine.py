"""The scheduler: pipelines, the jobs their input commits trigger, and running them.

A finished commit on a branch a pipeline reads creates a job (persisted first, so a daemon
that dies mid-job reruns it on restart). A job splits its inputs into datums, reuses the
result of every datum an earlier successful job of the same spec already ran, runs the rest
``parallelism`` at a time with retries, and writes the union of all datums' outputs as the
next commit of the pipeline's output repo, whose provenance names the input commits. That
commit triggers downstream pipelines in turn. A failed job moves nothing. A spec in the 1.3
form runs as 1.x jobs instead (``scheduler.legacy``): containers over partitioned views, with
``/pfs/prev``, building on the previous output.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import trio

from pfsmount.errors import (
    AlreadyExists,
    Conflict,
    Corrupt,
    InvalidArgument,
    NotFound,
    PfsError,
)
from pfsmount.pfs import Commit, Event, Pfs
from pfsmount.pfs.export import export
from pfsmount.pfs.state import KIND_FILE, Change, Entry, Scope, Staged
from scheduler import legacy
from scheduler.datums import Datum, DatumFile, datums
from scheduler.inputs import PfsInput, crossed
from scheduler.jobspec import JobSpec
from scheduler.records import TERMINAL, DatumResult, Job, Pipeline, Records
from scheduler.runners import DockerRunner, SandboxRunner, Task
from scheduler.spec import V1, Spec, V1Input

log = logging.getLogger("pfsmount.scheduler")
LOG_TAIL = 2000  # bytes of a failing datum's log kept in the job
_T = TypeVar("_T")
_SKIP, _STOPPED = "skip", "stopped"  # wait_commit outcomes other than a job
_TRY = re.compile(r"^\[pfsmount\] datum \S+ try \d+ of \d+$", re.M)  # starts a try's log
# A unit of work's outcome: its outputs (stored, not yet indexed), or its log tail on failure
_Outcome = tuple[list[tuple[str, Entry]], Staged] | str


class Scheduler:
    def __init__(self, pfs: Pfs, root: Path, mountpoint: Path | None) -> None:
        self.pfs = pfs
        self.state = pfs.state
        self.records = Records(pfs.state)
        self.logs = root / "logs"
        self.work = root / "work"
        self.mountpoint = mountpoint
        self.sandbox = SandboxRunner(hidden=(root, *([mountpoint] if mountpoint else [])))
        self.docker = DockerRunner()
        self._changed = threading.Condition()
        self._cancel: dict[str, threading.Event] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self._queue_send, self._queue_recv = trio.open_memory_channel[str](10_000)

    # -- the daemon service ------------------------------------------------------------------

    async def service(self, nursery: trio.Nursery) -> None:
        """The daemon service: recover unfinished jobs, then follow commits."""
        self._token = trio.lowlevel.current_trio_token()
        shutil.rmtree(self.work, ignore_errors=True)
        pending = await trio.to_thread.run_sync(self._recover)
        for job_id in pending:
            self._queue_send.send_nowait(job_id)
        self.pfs.events.subscribe(self._on_event)
        nursery.start_soon(self._dispatch)

    def _recover(self) -> list[str]:
        """Jobs a previous daemon left unfinished, plus jobs for commits it never saw."""
        for pipeline in self.list_pipelines():
            if not pipeline.stopped:
                self._catch_up(pipeline)
        with self.state.read() as scope:
            jobs = [j for j in self.records.jobs(scope) if j.state not in TERMINAL]
        return [j.id for j in sorted(jobs, key=lambda j: j.created)]

    def _catch_up(self, pipeline: Pipeline) -> None:
        heads = self._heads(pipeline.spec)
        if not heads:
            return
        with self.state.read() as scope:
            seen = any(j.pipeline == pipeline.name and j.inputs == heads
                       for j in self.records.jobs(scope))
        if not seen:
            self._new_job(pipeline.name, heads)

    def _on_event(self, event: Event) -> None:
        if event.kind == "commit_finished" and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._queue_trigger, event)

    def _queue_trigger(self, event: Event) -> None:
        trio.lowlevel.spawn_system_task(self._trigger_jobs, event)

    async def _trigger_jobs(self, event: Event) -> None:
        """Create the jobs a finished commit calls for (off the trio thread: LMDB writes),
        then queue them. This runs as a system task, whose exception would end the daemon, so
        it never raises: a pipeline whose job cannot be created now (a full disk) is tried
        again, with backoff, until it can."""
        names: list[str] | None = None
        delay = 0.5
        while True:
            try:
                ids, names = await trio.to_thread.run_sync(self._trigger, event, names)
            except Exception:  # listing the pipelines failed: all of them are still due
                log.exception("cannot create the jobs for %s@%s yet", event.repo, event.commit)
                ids = []
            for job_id in ids:
                await self._queue_send.send(job_id)
            if names == []:
                return
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _trigger(self, event: Event, only: list[str] | None) -> tuple[list[str], list[str]]:
        """Create a job for each pipeline (of ``only``, if given) that reads the event's
        branch. Returns the jobs made and the pipelines whose job could not be made."""
        assert event.branch is not None and event.commit is not None
        key = f"{event.repo}@{event.branch}"
        ids, failed = [], []
        for pipeline in self.list_pipelines():
            if (only is not None and pipeline.name not in only) or pipeline.stopped \
                    or key not in pipeline.spec.tree.branches():
                continue
            try:
                heads = self._heads(pipeline.spec)
                heads[key] = event.commit
                ids.append(self._new_job(pipeline.name, heads).id)
            except Exception:
                log.exception("cannot create a job of %s for %s@%s yet; trying again",
                              pipeline.name, event.repo, event.commit)
                failed.append(pipeline.name)
        return ids, failed

    async def _dispatch(self) -> None:
        locks: dict[str, trio.Lock] = {}
        async with trio.open_nursery() as nursery:
            try:
                async for job_id in self._queue_recv:
                    with self.state.read() as scope:
                        pipeline = self.records.job(scope, job_id).pipeline
                    lock = locks.setdefault(pipeline, trio.Lock())
                    nursery.start_soon(self._run_job, lock, job_id)
            except trio.Cancelled:  # the daemon stops: a one-off job may run for ever
                self._stop_one_off_jobs()
                raise

    def _stop_one_off_jobs(self) -> None:
        """Stop the running one-off jobs (``create-job``; a served notebook, say), so that
        ``pfsmount down`` does not wait for them; pipeline jobs finish, or rerun on restart."""
        for job_id, cancel in list(self._cancel.items()):
            with contextlib.suppress(PfsError):
                if self.inspect_job(job_id).spec is not None:
                    cancel.set()

    async def _run_job(self, lock: trio.Lock, job_id: str) -> None:
        async with lock:  # one job at a time per pipeline, in arrival order
            await trio.to_thread.run_sync(self.execute, job_id)

    # -- pipelines ---------------------------------------------------------------------------

    def _heads(self, spec: Spec) -> dict[str, str]:
        heads = {}
        with self.state.read() as scope:
            for leaf in spec.tree.leaves():
                head = self.state.branch_head(scope, leaf.repo, leaf.branch)
                if head is not None:
                    heads[f"{leaf.repo}@{leaf.branch}"] = head
        return heads

    def _upstream(self, scope: Scope, spec: Spec) -> set[str]:
        """Every repo the spec's output depends on, through other pipelines."""
        seen: set[str] = set()
        todo = spec.tree.repos()
        while todo:
            repo = todo.pop()
            if repo in seen:
                continue
            seen.add(repo)
            other = self.records.find_pipeline(scope, repo)
            if other is not None:
                todo.extend(other.spec.tree.repos())
        return seen

    def create_pipelines(self, specs: list[Spec], update: bool = False,
                         reprocess: bool = False) -> list[Pipeline]:
        """Create (or update) every pipeline of one spec file, or, when any is refused,
        none: all are checked before the first is created. A later spec may read an
        earlier one's output."""
        planned: set[str] = set()
        for spec in specs:
            self.check_pipeline(spec, update, planned)
            planned.add(spec.name)
        return [self.create_pipeline(spec, update, reprocess) for spec in specs]

    def check_pipeline(self, spec: Spec, update: bool = False,
                       planned: set[str] | frozenset[str] = frozenset()) -> Pipeline | None:
        """Refuse what ``create_pipeline`` would refuse; ``planned`` names pipelines created
        just before this one. The existing pipeline of that name, if any."""
        if spec.name in planned:
            raise AlreadyExists(f"pipeline {spec.name} is given twice")
        with self.state.read() as scope:
            for leaf in spec.tree.leaves():
                if self.state.repo_kind(scope, leaf.repo) is None and leaf.repo not in planned:
                    raise InvalidArgument(f"pipeline {spec.name}: input repo {leaf.repo} "
                                          "does not exist")
            if spec.name in self._upstream(scope, spec):
                raise InvalidArgument(f"pipeline {spec.name}: its inputs depend on its own "
                                      "output (a cycle in the pipeline graph)")
            existing = self.records.find_pipeline(scope, spec.name)
            if existing is not None and not update:
                raise AlreadyExists(f"pipeline {spec.name} already exists (use update)")
            if existing is None and update:
                raise NotFound(f"pipeline {spec.name} not found")
            if existing is None and self.state.repo_kind(scope, spec.name) not in (None,
                                                                                 "pipeline"):
                raise Conflict(f"repo {spec.name} already exists and is not a pipeline's output")
        return existing

    def create_pipeline(self, spec: Spec, update: bool = False,
                        reprocess: bool = False) -> Pipeline:
        existing = self.check_pipeline(spec, update)
        with self.state.read() as scope:
            made = self.state.repo_kind(scope, spec.name) is None
        self.pfs.repos.create(spec.name, spec.description, kind="pipeline", exist_ok=True)
        try:
            self.pfs.repos.create_branch(
                spec.name, spec.output_branch,
                provenance=spec.tree.branches())
        except BaseException:
            if made:  # no output repo left behind without its pipeline
                self.pfs.repos.delete(spec.name, force=True)
            raise
        now = time.time()
        with self.state.write() as scope:
            version = existing.version + 1 if existing else 1
            pipeline = Pipeline(name=spec.name, spec=spec, created=existing.created
                                if existing else now, updated=now, version=version)
            self.records.put_pipeline(scope, pipeline)
        heads = self._heads(spec)
        if heads:
            job = self._new_job(spec.name, heads, reprocess=reprocess)
            self._enqueue(job.id)
        return pipeline

    def _enqueue(self, job_id: str) -> None:
        if self._token is not None:
            self._token.run_sync_soon(self._queue_send.send_nowait, job_id)

    def list_pipelines(self) -> list[Pipeline]:
        with self.state.read() as scope:
            return list(self.records.pipelines(scope))

    def inspect_pipeline(self, name: str) -> Pipeline:
        with self.state.read() as scope:
            return self.records.pipeline(scope, name)

    def delete_pipeline(self, name: str) -> None:
        """Delete a pipeline and its output repo; refused while another pipeline reads it.
        A pipeline whose record cannot be read is deleted all the same."""
        with self.state.read() as scope:
            with contextlib.suppress(Corrupt):
                self.records.pipeline(scope, name)
            readers = [p.name for p in self.records.pipelines(scope)
                       if name in p.spec.tree.repos()]
            output = self.state.repo_kind(scope, name) is not None
        if readers:
            raise Conflict(f"pipeline {', '.join(readers)} reads {name}; delete it first")
        for job in self.list_jobs(name):
            if job.state not in TERMINAL:
                self.stop_job(job.id)
        with self.state.write() as scope:
            self.records.delete_pipeline(scope, name)
        if output:
            self.pfs.repos.delete(name, force=True)

    def set_stopped(self, name: str, stopped: bool) -> Pipeline:
        with self.state.write() as scope:
            pipeline = self.records.pipeline(scope, name)
            pipeline.stopped = stopped
            self.records.put_pipeline(scope, pipeline)
        if not stopped:
            self._catch_up(pipeline)
            self._requeue_pending(name)
        return pipeline

    def _requeue_pending(self, name: str) -> None:
        for job in self.list_jobs(name):
            if job.state == "created":
                self._enqueue(job.id)

    # -- jobs --------------------------------------------------------------------------------

    def _new_job(self, pipeline: str, inputs: dict[str, str], reprocess: bool = False) -> Job:
        job = Job(id=uuid.uuid4().hex, pipeline=pipeline, inputs=inputs, created=time.time(),
                  reprocess=reprocess)
        self._save(job)
        return job

    def create_job(self, spec: JobSpec) -> Job:
        """A 1.x one-off job (``create-job``): ``spec``'s command once on the named input
        commits, each whole at ``/pfs/<name>`` (partitioned by its method across
        ``parallelism`` containers, as a 1.x job with no parent), writing ``/pfs/out`` into
        the first commit of a repo of its own, ``job-<id>``. Each commit is resolved now
        (a branch to its head), so the job sees exactly those snapshots; an unknown or open
        commit refuses the job and nothing is created. It runs at once, in the runner its
        ``image`` chooses, with one try; ``stop_job`` stops it (for a long-running command)."""
        commits: dict[str, str] = {}
        inputs = []
        for inp in spec.inputs:
            at = inp.commit.removeprefix(f"{inp.repo}/")  # pasted as list-commit prints it
            commit = self.pfs.commits.inspect(f"{inp.repo}@{at}")
            if commit.is_open:
                raise Conflict(f"input {inp.name}: commit {inp.repo}@{commit.id} is open; "
                               f"finish it first (`pfsmount commit finish {inp.repo}@"
                               f"{commit.branch}`)")
            commits[f"{inp.repo}@{commit.id}"] = commit.id
            inputs.append(V1Input(name=inp.name, repo=inp.repo, branch=commit.id,
                                  method=inp.method, run_empty=True))
        job_id = uuid.uuid4().hex
        name = f"job-{job_id[:12]}"
        leaves = [PfsInput(repo=i.repo, branch=i.branch, glob="/", name=i.name)
                  for i in inputs]
        full = Spec(name=name, transform=spec.transform,
                    input=crossed(leaves).stored(),
                    description=f"job {job_id}", parallelism=spec.parallelism, datum_tries=1,
                    legacy=True, v1=V1(inputs=inputs, overwrite=True))
        job = Job(id=job_id, pipeline=name, inputs=commits, created=time.time(),
                  reprocess=True, spec=full)
        self._save(job)
        self._enqueue(job.id)
        return job

    def _save(self, job: Job) -> None:
        with self.state.write() as scope:
            self.records.put_job(scope, job)
        with self._changed:
            self._changed.notify_all()

    def list_jobs(self, pipeline: str | None = None) -> list[Job]:
        with self.state.read() as scope:
            jobs = [j for j in self.records.jobs(scope) if pipeline in (None, j.pipeline)]
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def inspect_job(self, job_id: str) -> Job:
        with self.state.read() as scope:
            return self.records.job(scope, job_id)

    def stop_job(self, job_id: str) -> Job:
        job = self.inspect_job(job_id)
        if job.state in TERMINAL:
            return job
        self._cancel.setdefault(job_id, threading.Event()).set()
        if job.state == "created":
            job.state, job.finished = "killed", time.time()
            self._save(job)
        return self.wait_job(job_id)

    def wait_job(self, job_id: str, timeout: float | None = None) -> Job:
        return self._wait(lambda: self._terminal(job_id), timeout, f"job {job_id}")

    def _terminal(self, job_id: str) -> Job | None:
        job = self.inspect_job(job_id)
        return job if job.state in TERMINAL else None

    def _wait(self, probe: Callable[[], _T | None], timeout: float | None, what: str) -> _T:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while (found := probe()) is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Conflict(f"timed out waiting for {what}")
                self._changed.wait(0.5 if left is None else min(left, 0.5))
        return found

    def wait_commit(self, ref: str, timeout: float | None = None) -> list[Commit]:
        """Wait for every job downstream of a commit; the output commits, in order."""
        start = self.pfs.commits.wait(ref, timeout)
        out: list[Commit] = []
        failures: list[str] = []
        frontier = [start]
        while frontier:
            commit = frontier.pop(0)
            key = f"{commit.repo}@{commit.branch}"
            for pipeline in self.list_pipelines():
                if key not in pipeline.spec.tree.branches():
                    continue

                def probe(p: Pipeline = pipeline, c: Commit = commit, k: str = key
                          ) -> Job | str | None:
                    jobs = [j for j in self.list_jobs(p.name) if j.inputs.get(k) == c.id]
                    if jobs and jobs[0].state in TERMINAL:
                        return jobs[0]
                    if not jobs and self._heads(p.spec).get(k) != c.id:
                        return _SKIP  # superseded by a newer commit: no job comes
                    if jobs and jobs[0].state != "created":
                        return None  # running: a stopped pipeline lets it finish
                    try:
                        stopped = self.inspect_pipeline(p.name).stopped
                    except NotFound:
                        return _SKIP  # deleted while we waited
                    return _STOPPED if stopped else None

                job = self._wait(probe, timeout, f"pipeline {pipeline.name}")
                if job == _STOPPED:
                    failures.append(f"pipeline {pipeline.name} is stopped: nothing processes "
                                    f"{key}={commit.id} until `pfsmount pipeline start "
                                    f"{pipeline.name}`")
                    continue
                if not isinstance(job, Job):
                    continue
                if job.state == "success" and job.output:
                    output = self.pfs.commits.inspect(job.output)
                    out.append(output)
                    frontier.append(output)
                elif job.state == "success":
                    continue  # a 1.x job with nothing to run (runEmpty false): no output
                else:
                    first, *more = job.error.splitlines() or [""]
                    logs = f" (all of it: `pfsmount logs -p {job.pipeline} --job {job.id}`)"
                    failures.append(f"pipeline {job.pipeline} job {job.id} {job.state}: "
                                    f"{first}{logs if more else ''}")
        if failures:
            raise Conflict("; ".join(failures))
        return out

    # -- running a job (in a worker thread) --------------------------------------------------

    def execute(self, job_id: str) -> None:
        job = self.inspect_job(job_id)
        if job.state in TERMINAL:
            return
        if job.spec is not None:  # a one-off job: its spec and output repo are its own
            spec, version = job.spec, job.version
        else:
            try:
                pipeline = self.inspect_pipeline(job.pipeline)
            except (NotFound, Corrupt) as e:  # deleted, or its record cannot be read
                job.state, job.finished, job.error = "killed", time.time(), e.message
                self._save(job)
                return
            if pipeline.stopped:
                return  # stays "created" until the pipeline starts again
            spec, version = pipeline.spec, pipeline.version
        cancel = self._cancel.setdefault(job_id, threading.Event())
        job.state, job.started = "running", time.time()
        job.processed = job.skipped = job.failed = 0
        job.error, job.version = "", version
        self._save(job)
        try:
            if job.spec is not None:
                self.pfs.repos.create(spec.name, f"output of job {job.id}", kind="pipeline",
                                      exist_ok=True)
            self._execute(job, spec, cancel)
        except PfsError as e:
            job.state, job.error = "failure", e.message
        except Exception as e:
            log.exception("job %s failed", job.id)
            job.state, job.error = "failure", f"internal error: {e}"
        if cancel.is_set() and job.output is None:
            job.state = "killed"
        job.finished = time.time()
        self._save(job)
        if job.spec is not None:  # no later job reuses a one-off job's results
            with self.state.write() as scope:
                self.records.delete_pipeline(scope, job.pipeline)
        self._cancel.pop(job_id, None)
        shutil.rmtree(self.work / job.id, ignore_errors=True)

    def _execute(self, job: Job, spec: Spec, cancel: threading.Event) -> None:
        if spec.v1 is not None:
            self._execute_v1(job, spec, cancel)
            return
        found = datums(self.pfs, spec.tree, job.inputs)
        results = self._run_all(job, spec, [
            (d.id, functools.partial(self._run_datum, job, spec, d, cancel)) for d in found],
            cancel)
        if results is None:
            return
        self._commit_output(job, spec, self._union(spec, found, results))

    def _commit_output(self, job: Job, spec: Spec, changes: dict[str, Change],
                       base: str | None = None) -> None:
        """The job's output commit, and the job marked done in the same transaction: a job
        left "running" beside its output would run again on restart and commit it twice."""

        def done(scope: Scope, commit: Commit) -> None:
            job.output, job.state = f"{spec.name}@{commit.id}", "success"
            job.finished = time.time()
            self.records.put_job(scope, job)

        self.pfs.files.write_snapshot(spec.name, spec.output_branch, changes,
                                      provenance=self._provenance(job), base=base, record=done)

    def _run_all(self, job: Job, spec: Spec, units: list[tuple[str, Callable[[], _Outcome]]],
                 cancel: threading.Event) -> dict[str, list[tuple[str, Entry]]] | None:
        """Run a job's units of work (datums, or 1.x containers) ``parallelism`` at a time,
        reusing those an earlier job of the same spec ran: each one's outputs by its id, or
        None when the job failed or was stopped (its state says which)."""
        job.datums = len(units)
        digest = spec.digest  # a hash of the spec: once per job, not once per datum
        results: dict[str, list[tuple[str, Entry]]] = {}
        todo: list[tuple[str, Callable[[], _Outcome]]] = []
        with self.state.read() as scope:
            for unit_id, run in units:
                done = None if job.reprocess else self.records.datum(
                    scope, spec.name, digest, unit_id)
                if done is not None:
                    results[unit_id] = done.outputs
                    job.skipped += 1
                else:
                    todo.append((unit_id, run))
        self._save(job)
        failure: str | None = None
        unsaved: list[tuple[str, list[tuple[str, Entry]], Staged]] = []
        last_save = time.monotonic()
        with ThreadPoolExecutor(spec.parallelism) as pool:
            for (unit_id, _), outcome in zip(todo, pool.map(lambda u: u[1](), todo),
                                             strict=True):
                if isinstance(outcome, str):
                    job.failed += 1
                    failure = failure or f"datum {unit_id} failed after " \
                                         f"{spec.datum_tries} tries{outcome}"
                else:
                    results[unit_id] = outcome[0]
                    unsaved.append((unit_id, *outcome))
                    job.processed += 1
                if time.monotonic() - last_save > 0.5:  # progress and results, in batches
                    self._save_results(job, spec, digest, unsaved)
                    last_save = time.monotonic()
        self._save_results(job, spec, digest, unsaved)
        if cancel.is_set():
            job.state = "killed"
            return None
        if failure is not None:
            job.state, job.error = "failure", failure
            return None
        return results

    # -- 1.x jobs (scheduler.legacy says what they mean) ---------------------------------------

    def _parent_job(self, job: Job, spec: Spec) -> Job | None:
        """The job a 1.x job continues: the latest successful one of this pipeline version,
        if it saw the same commit of every non-incremental input (else the job starts
        over, as 1.x's ``inputsAreParental``)."""
        assert spec.v1 is not None
        if job.reprocess:
            return None
        done = [j for j in self.list_jobs(spec.name) if j.state == "success" and j.output
                and j.version == job.version and j.created < job.created and j.id != job.id]
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

    def _execute_v1(self, job: Job, spec: Spec, cancel: threading.Event) -> None:
        plan, prev = self.v1_plan(job, spec)
        if plan.idle:
            log.info("job %s of pipeline %s runs nothing: %s", job.id, spec.name, plan.idle)
            job.state, job.error = "success", f"nothing to run: {plan.idle}"
            return
        results = self._run_all(job, spec, [
            (s.id, functools.partial(self._run_shard, job, spec, s, prev, cancel))
            for s in plan.shards], cancel)
        if results is None:
            return
        changes = self._v1_output(spec, prev, [results[s.id] for s in plan.shards])
        self._commit_output(job, spec, changes, base=prev)

    def _v1_output(self, spec: Spec, prev: str | None,
                   outputs: list[list[tuple[str, Entry]]]) -> dict[str, Change]:
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

    def _run_shard(self, job: Job, spec: Spec, shard: legacy.Shard, prev: str | None,
                   cancel: threading.Event) -> _Outcome:
        """Run one 1.x container: its views at /pfs/<input>, the previous output at
        /pfs/prev (read-only, when there is one)."""
        if cancel.is_set():
            return "job stopped"
        scratch = self.work / job.id / shard.id
        try:
            binds, env = self.shard_inputs(spec, shard, prev, scratch)
            return self._attempts(job, spec, shard.id, binds, env, cancel)
        finally:  # its views and /pfs/out, stored by now: a job holds what it runs, no more
            shutil.rmtree(scratch, ignore_errors=True)

    def shard_inputs(self, spec: Spec, shard: legacy.Shard, prev: str | None, scratch: Path
                     ) -> tuple[list[tuple[Path, str]], dict[str, str]]:
        """A 1.x container's binds (views written to ``scratch``) and env."""
        image = spec.transform.image
        binds: list[tuple[Path, str]] = []
        env = {"PACH_OUTPUT_COMMIT_ID": "", **({"PACH_PREV_COMMIT_ID": prev} if prev else {})}
        for n, v in enumerate(shard.views):
            inside = f"/pfs/{v.input.name}"
            if v.whole:  # the commit as it is: bound like a 2.x input
                binds.append(self._source(DatumFile(v.input.name, v.input.repo, v.commit,
                                                    "/", "", "dir"), scratch, image, inside))
            else:
                target = scratch / "v1" / str(n)
                shutil.rmtree(target, ignore_errors=True)
                legacy.write_view(self.pfs, v, target)
                binds.append((target, inside))
            env[v.input.name] = inside
            env[f"PACH_{re.sub(r'[^A-Z0-9]', '_', v.input.name.upper())}_COMMIT_ID"] = v.commit
        if prev is not None:
            binds.append(self._source(DatumFile("prev", spec.name, prev, "/", "", "dir"),
                                      scratch, image, "/pfs/prev"))
        return binds, env

    def _provenance(self, job: Job) -> list[str]:
        out: dict[str, None] = {}
        for key, commit_id in sorted(job.inputs.items()):
            repo = key.split("@", 1)[0]
            out[f"{repo}@{commit_id}"] = None
            for p in self.pfs.commits.inspect(f"{repo}@{commit_id}").provenance:
                out[p] = None
        return list(out)

    def _union(self, spec: Spec, found: list[Datum],
               results: dict[str, list[tuple[str, Entry]]]) -> dict[str, Change]:
        """All datums' outputs; a path written twice fails (2.x) or is concatenated (1.x)."""
        owner: dict[str, str] = {}
        union: dict[str, list[Entry]] = {}
        for d in found:
            for path, entry in results[d.id]:
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

    def _source(self, f: DatumFile, scratch: Path, image: str, inside: str
                ) -> tuple[Path, str]:
        """The bind that shows a datum's input at ``inside``: (the mount, or a copy; where).
        A container of a root daemon runs as another uid (65534), which a mount private to
        root does not let in: it gets a copy. A symlink is never a bind's source (the bind
        would show what it points to on this machine, e.g. /etc/shadow): its copy's
        directory is bound in its parent's place, so the link resolves inside."""
        rel = f.path.lstrip("/")
        shared = not image or os.getuid() != 0
        if (shared and f.type != "symlink" and self.mountpoint is not None
                and self.mountpoint.is_dir()):
            return self.mountpoint / f.repo / f.commit / rel, inside
        # A directory of its own per input file set: two inputs of one name share no path,
        # so a link one of them holds cannot lead the other's copy out (nor does ``export``
        # follow one below ``target``).
        base = scratch / "in"
        base.mkdir(parents=True, exist_ok=True)
        for n in itertools.count():
            with contextlib.suppress(FileExistsError):
                (base / str(n)).mkdir()
                break
        if f.type == "symlink":
            link = base / str(n) / rel.rsplit("/", 1)[-1]
            export(self.pfs, f"{f.repo}@{f.commit}", link, path=f.path)
            return link.parent, inside.rsplit("/", 1)[0]
        target = base / str(n) / rel if rel else base / str(n)
        export(self.pfs, f"{f.repo}@{f.commit}", target, path=f.path, readable=True)
        return target, inside

    def _save_results(self, job: Job, spec: Spec, digest: str,
                      unsaved: list[tuple[str, list[tuple[str, Entry]], Staged]]) -> None:
        """Record finished datums (so a rerun skips them), with their outputs' content, and
        the job's progress, in one transaction: one per datum would cost more than running
        it."""

        def record(scope: Scope) -> None:
            for datum_id, outputs, _ in unsaved:
                self.records.put_datum(scope, spec.name, digest, datum_id,
                                       DatumResult(job=job.id, outputs=outputs))
            self.records.put_job(scope, job)

        self.state.land([staged for _, _, staged in unsaved], record, durable=False)
        unsaved.clear()
        with self._changed:
            self._changed.notify_all()

    def _run_datum(self, job: Job, spec: Spec, d: Datum, cancel: threading.Event
                   ) -> _Outcome:
        """Run one datum with retries: its outputs (stored, not yet indexed), or its log
        tail when every try failed."""
        if cancel.is_set():  # a stopped job drains its queue without starting anything
            return "job stopped"
        scratch = self.work / job.id / d.id
        try:
            binds, env = self.datum_inputs(spec, d, scratch)
            return self._attempts(job, spec, d.id, binds, env, cancel)
        finally:  # its input copies and /pfs/out, stored by now: a job holds what it runs
            shutil.rmtree(scratch, ignore_errors=True)

    def datum_inputs(self, spec: Spec, d: Datum, scratch: Path
                     ) -> tuple[list[tuple[Path, str]], dict[str, str]]:
        """A datum's binds (copies, when needed, go in ``scratch``) and the variables that
        name them (``$<input>``): also what ``pfsmount datum shell`` rebuilds."""
        binds = []
        env = {}
        for f in d.files:
            inside = f"/pfs/{f.input}{f.path if f.path != '/' else ''}"
            binds.append(self._source(f, scratch, spec.transform.image, inside))
            env[f.input] = inside
        return binds, env

    def _attempts(self, job: Job, spec: Spec, unit_id: str, binds: list[tuple[Path, str]],
                  env: dict[str, str], cancel: threading.Event) -> _Outcome:
        """Run a unit of work (a datum, or a 1.x container) up to ``datum_tries`` times."""
        scratch = self.work / job.id / unit_id
        logfile = self.logs / spec.name / job.id / f"{unit_id}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        env = self.unit_env(job, spec, unit_id, env)
        runner = self.docker if spec.transform.image else self.sandbox
        for attempt in range(1, spec.datum_tries + 1):
            out = scratch / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            with open(logfile, "a") as log_out:
                log_out.write(f"[pfsmount] datum {unit_id} try {attempt} of "
                              f"{spec.datum_tries}\n")
            code = runner.run(self.task(spec, env, binds, out, logfile, cancel))
            if cancel.is_set():
                return "job stopped"
            if code == 0 or code in spec.transform.accept_return_code:
                return self.state.stage_tree(out)
            with open(logfile, "a") as log_out:
                log_out.write(f"[pfsmount] exit code {code}\n")
        return _failure(code, logfile)

    @staticmethod
    def unit_env(job: Job, spec: Spec, unit_id: str, env: dict[str, str]) -> dict[str, str]:
        """The environment a unit of work runs with, over its inputs' ``env``."""
        return {**spec.transform.env, "PACH_JOB_ID": job.id, "PACH_DATUM_ID": unit_id,
                "PPS_PIPELINE_NAME": spec.name, "PFS_OUT": "/pfs/out", **env}

    @staticmethod
    def task(spec: Spec, env: dict[str, str], binds: list[tuple[Path, str]], out: Path,
             logfile: Path, cancel: threading.Event) -> Task:
        """One try of a unit of work, as its runner takes it. No ``stdin`` lines, no stdin:
        a Docker runner gives one through ``sh``, which an image need not have."""
        lines = spec.transform.stdin
        return Task(cmd=spec.transform.cmd, stdin="".join(f"{x}\n" for x in lines),
                    env=env, binds=binds, out=out, log=logfile,
                    working_dir=spec.transform.working_dir, timeout=spec.datum_timeout,
                    image=spec.transform.image, cancelled=cancel)

    def logs_for(self, pipeline: str, job: str | None = None, datum: str | None = None
                 ) -> list[Path]:
        """Datum log files, oldest job first; the pipeline's, or a one-off job's (named
        ``job-<id>``, as its output repo)."""
        if not any(j.spec is not None for j in self.list_jobs(pipeline)):
            self.inspect_pipeline(pipeline)
        if job is not None and self.inspect_job(job).pipeline != pipeline:
            raise NotFound(f"job {job} is not a job of pipeline {pipeline}")
        base = self.logs / pipeline
        jobs = [job] if job else [j.id for j in reversed(self.list_jobs(pipeline))]
        found = []
        for j in jobs:
            folder = base / j
            if folder.is_dir():
                found += sorted(p for p in folder.glob("*.log")
                                if datum is None or p.stem == datum)
        if datum is not None and not found:
            raise NotFound(f"no logs of datum {datum} in pipeline {pipeline}")
        return found


def _failure(code: int, logfile: Path) -> str:
    """How a datum's last try ended, for the job's error: a first line that stands alone
    (``commit wait`` shows only it) with the exit and the last lines the datum printed,
    then the log's tail."""
    tail = logfile.read_bytes()[-LOG_TAIL:].decode(errors="replace")
    last_try = _TRY.split(tail)[-1].splitlines()
    said = [line.strip() for line in last_try
            if line.strip() and not line.startswith("[pfsmount]")]
    how = "timed out" if "[pfsmount] datum timed out" in last_try else f"exit code {code}"
    summary = " | ".join(said[-3:])
    if len(summary) > 300:
        summary = "..." + summary[-297:]
    return (f" ({how}): {summary}" if summary else f" ({how}) with no output") + \
        f"\nlog tail:\n{tail}"
