"""The scheduler: pipelines, the jobs their input commits trigger, and their lifecycle.

A finished commit on a branch a pipeline reads creates a job (persisted first, so a daemon
that dies mid-job reruns it on restart). Jobs run one at a time per pipeline, in arrival
order; running one (its datums through a ``DatumExecutor``, its output commit) is
``scheduler.jobs``'s. An output commit triggers downstream pipelines in turn; a failed job
moves nothing, and every job below it is ``unrunnable`` (naming it), as ``commit wait``
reports. A commit that reaches a pipeline both directly and through another pipeline makes
its job once, with that pipeline's output for it. Owns the daemon service (recovery,
triggers, the queue), the pipeline and job records' lifecycle (create, update, stop, delete),
waiting for jobs and finding their logs.
Runs no datum itself and keeps its records only through ``pfs.state`` (``records``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
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
from pfsmount.pfs.state import Scope
from scheduler import cron, egress
from scheduler.executor import DatumExecutor
from scheduler.inputs import PfsInput, crossed
from scheduler.jobs import Jobs
from scheduler.jobspec import JobSpec
from scheduler.local_executor import LocalExecutor
from scheduler.records import TERMINAL, Job, Pipeline, Records
from scheduler.spec import V1, Spec, V1Input
from scheduler.spout import Spout

log = logging.getLogger("pfsmount.scheduler")
_T = TypeVar("_T")
_SKIP, _STOPPED = "skip", "stopped"  # wait_commit outcomes other than a job


def _left_no_output(job: Job) -> bool:
    """Whether ``job`` ended without an output commit, leaving its readers no input: a job
    whose only failure was its egress (or that was stopped while egressing) made its output,
    and downstream, which does not wait for egress, ran on it."""
    return job.state in ("failure", "killed", "unrunnable") and job.output is None


class Scheduler:
    def __init__(self, pfs: Pfs, root: Path, mountpoint: Path | None,
                 executor: DatumExecutor | None = None) -> None:
        """Datums run through ``executor``, by default a ``LocalExecutor`` (which
        ``datum run|shell`` reproductions always use: they bind this machine's paths)."""
        self.pfs = pfs
        self.state = pfs.state
        self.records = Records(pfs.state)
        self.logs = root / "logs"
        self.work = root / "work"
        self.local = LocalExecutor(pfs, root, mountpoint)
        self.executor: DatumExecutor = executor or self.local
        self.jobs = Jobs(pfs, self.records, self.executor, self._notify)
        self._changed = threading.Condition()
        self._cancel: dict[str, threading.Event] = {}
        self._closing = threading.Event()  # the daemon stops: egress copies end, resumed later
        self._runs: dict[str, threading.Lock] = {}  # per pipeline: its job or a datum restart
        self._runs_guard = threading.Lock()
        self._token: trio.lowlevel.TrioToken | None = None
        self._queue_send, self._queue_recv = trio.open_memory_channel[str](10_000)
        self.ticker = cron.Ticker(pfs, self._active_crons)
        self.spouts: dict[str, Spout] = {}

    # -- the daemon service ------------------------------------------------------------------

    async def service(self, nursery: trio.Nursery) -> None:
        """The daemon service: recover unfinished jobs, then follow commits."""
        self._token = trio.lowlevel.current_trio_token()
        self.local.clear()
        pending = await trio.to_thread.run_sync(self._recover)
        for job_id in pending:
            self._queue_send.send_nowait(job_id)
        self.pfs.events.subscribe(self._on_event)
        nursery.start_soon(self._dispatch)
        nursery.start_soon(self.ticker.run)
        nursery.start_soon(self._run_spouts)

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
                    or key not in pipeline.spec.tree.branches() \
                    or self._deferred(pipeline.spec, key):
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
        try:
            async with trio.open_nursery() as nursery:
                try:
                    async for job_id in self._queue_recv:
                        with self.state.read() as scope:
                            pipeline = self.records.job(scope, job_id).pipeline
                        lock = locks.setdefault(pipeline, trio.Lock())
                        nursery.start_soon(self._run_job, lock, job_id)
                except trio.Cancelled:  # the daemon stops: a one-off job may run for ever
                    self._closing.set()  # and an egress may wait on a server for long
                    self._stop_one_off_jobs()
                    raise
        finally:  # every job has ended: no container of theirs outlives the daemon
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.local.close)

    def _stop_one_off_jobs(self) -> None:
        """Stop the running one-off jobs (``create-job``; a served notebook, say), so that
        ``pfsmount down`` does not wait for them; pipeline jobs finish, or rerun on restart."""
        for job_id in list(self._cancel):
            with contextlib.suppress(PfsError):
                if self.inspect_job(job_id).spec is not None:
                    self._stop(job_id)

    async def _run_job(self, lock: trio.Lock, job_id: str) -> None:
        async with lock:  # one job at a time per pipeline, in arrival order
            await trio.to_thread.run_sync(self.execute, job_id)

    # -- cron inputs and spouts ---------------------------------------------------------------

    def _active_crons(self) -> list[cron.CronInput]:
        return [c for p in self.list_pipelines() if not p.stopped
                for c in cron.crons(p.spec.tree)]

    def run_cron(self, name: str) -> list[Commit]:
        """Tick every cron input of pipeline ``name`` now (``pipeline run-cron``)."""
        crons = cron.crons(self.inspect_pipeline(name).spec.tree)
        if not crons:
            raise InvalidArgument(f"pipeline {name} has no cron input")
        now = datetime.now(UTC)
        made = []
        for c in crons:
            made.append(cron.tick(self.pfs, c, now))
            self.ticker.ticked(c, now)
        return made

    async def _run_spouts(self) -> None:
        """Spouts run while the daemon does: started now, stopped when it stops."""
        def start() -> None:
            for pipeline in self.list_pipelines():
                self._start_spout(pipeline)

        def stop() -> None:
            for name in list(self.spouts):
                self._stop_spout(name)

        try:
            await trio.to_thread.run_sync(start)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stop)

    def _start_spout(self, pipeline: Pipeline) -> None:
        """(Re)start the spout of ``pipeline``, if it is one and is not stopped."""
        self._stop_spout(pipeline.name)
        spec = pipeline.spec
        if spec.spout is None or pipeline.stopped or self._token is None:
            return
        runner = self.local.docker if spec.transform.image else self.local.sandbox
        spout = Spout(self.pfs, spec, runner, self.work / "spouts" / spec.name,
                      self.logs / spec.name / "spout.log")
        self.spouts[spec.name] = spout
        spout.start()

    def _stop_spout(self, name: str) -> None:
        spout = self.spouts.pop(name, None)
        if spout is not None:
            spout.stop()

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
            made = spec.tree.made_repos()
            for leaf in spec.tree.leaves():
                if self.state.repo_kind(scope, leaf.repo) is None and leaf.repo not in planned \
                        and leaf.repo not in made:
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
        for repo in spec.tree.made_repos():  # a cron's tick repo
            self.pfs.repos.create(repo, f"cron ticks of pipeline {spec.name}", exist_ok=True)
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
        if spec.spout is not None or existing is not None:
            self._start_spout(pipeline)
        heads = self._heads(spec)
        if heads and not self._upstream_busy(spec):  # else their next output triggers it
            job = self._new_job(spec.name, heads, reprocess=reprocess)
            if (failed := self._failed_input(spec)) is not None:
                self._unrunnable_downstream(failed, only=job)
            else:
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
            pipeline = None
            with contextlib.suppress(Corrupt):
                pipeline = self.records.pipeline(scope, name)
            readers = [p.name for p in self.records.pipelines(scope)
                       if name in p.spec.tree.repos()]
            output = self.state.repo_kind(scope, name) is not None
        if readers:
            raise Conflict(f"pipeline {', '.join(readers)} reads {name}; delete it first")
        self._stop_spout(name)
        made = [] if pipeline is None else pipeline.spec.tree.made_repos()
        for job in self.list_jobs(name):
            if job.state not in TERMINAL:
                self.stop_job(job.id)
        with self.state.write() as scope:
            self.records.delete_pipeline(scope, name)
        if output:
            self.pfs.repos.delete(name, force=True)
        for repo in made:
            with contextlib.suppress(NotFound):
                self.pfs.repos.delete(repo, force=True)

    def set_stopped(self, name: str, stopped: bool) -> Pipeline:
        with self.state.write() as scope:
            pipeline = self.records.pipeline(scope, name)
            pipeline.stopped = stopped
            self.records.put_pipeline(scope, pipeline)
        self._start_spout(pipeline)  # or stop it
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
        self._notify()

    def _notify(self) -> None:
        """A job's record changed: waiters look again."""
        with self._changed:
            self._changed.notify_all()

    def _stop(self, job_id: str) -> None:
        self._cancel.setdefault(job_id, threading.Event()).set()
        self.executor.cancel(job_id)

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
        self._stop(job_id)
        if job.state == "created":
            job.state, job.finished = "killed", time.time()
            self._unrunnable_downstream(job)
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
        seen: set[str] = set()  # a job reached by two of its inputs is reported once
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
                    if not jobs and (up := self._deferred(p.spec, k)):
                        # its job comes with its upstream's output, or as unrunnable
                        return _SKIP if any(u.stopped for u in up) else None
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
                if not isinstance(job, Job) or job.id in seen:
                    continue
                seen.add(job.id)
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
                    failures += self._unrunnable_report(job, seen)
                    if job.output:  # only its egress failed: downstream ran on its output
                        frontier.append(self.pfs.commits.inspect(job.output))
        if failures:
            raise Conflict("; ".join(failures))
        return out

    # -- jobs that cannot be right ----------------------------------------------------------

    def _deferred(self, spec: Spec, key: str) -> list[Pipeline]:
        """The pipelines ``spec`` reads whose own output depends on the branch ``key``: a
        commit on ``key`` reaches ``spec`` through their next output (or their failure), not
        at once, so that its job sees inputs that belong together, as Pachyderm's commit
        sets do."""
        with self.state.read() as scope:
            found = []
            for read in spec.tree.branches():
                repo, branch = read.split("@", 1)
                p = self.records.find_pipeline(scope, repo) if read != key else None
                if p is not None and p.spec.output_branch == branch \
                        and key in self._feeds(scope, p.spec):
                    found.append(p)
            return found

    def _feeds(self, scope: Scope, spec: Spec) -> set[str]:
        """Every branch (``repo@branch``) the spec's output depends on, through the output
        branches of other pipelines."""
        seen: set[str] = set()
        todo = list(spec.tree.branches())
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            repo, branch = key.split("@", 1)
            other = self.records.find_pipeline(scope, repo)
            if other is not None and other.spec.output_branch == branch:
                todo.extend(other.spec.tree.branches())
        return seen

    def _upstream_busy(self, spec: Spec) -> bool:
        """Whether a pipeline ``spec`` depends on has a job still to finish."""
        with self.state.read() as scope:
            upstream = self._upstream(scope, spec)
            return any(j.pipeline in upstream and j.state not in TERMINAL
                       for j in self.records.jobs(scope))

    def _failed_input(self, spec: Spec) -> Job | None:
        """The last job of a pipeline ``spec`` reads, when it did not succeed."""
        for repo in spec.tree.repos():
            jobs = self.list_jobs(repo)
            if jobs and _left_no_output(jobs[0]):
                return jobs[0]
        return None

    def _unrunnable_downstream(self, failed: Job, only: Job | None = None) -> None:
        """A job that did not succeed leaves the pipelines reading its output without their
        input: each gets a job in state ``unrunnable`` naming it (and theirs, in turn), on
        the commits it would have read (``only``: this new job, and no other). A one-off
        job has no readers."""
        if failed.spec is not None:
            return
        how = {"failure": "failed", "killed": "was killed"}.get(failed.state, "is unrunnable")
        for pipeline in self.list_pipelines():
            if pipeline.stopped or failed.pipeline not in pipeline.spec.tree.repos() \
                    or (only is not None and pipeline.name != only.pipeline):
                continue
            heads = self._heads(pipeline.spec)
            heads.update({k: v for k, v in failed.inputs.items() if k in heads})
            job = only or Job(id=uuid.uuid4().hex, pipeline=pipeline.name, inputs=heads,
                              created=time.time())
            job.state, job.finished = "unrunnable", time.time()
            job.error = f"upstream job {failed.id} of pipeline {failed.pipeline} {how}"
            self._unrunnable_downstream(job)
            self._save(job)

    def _unrunnable_report(self, failed: Job, seen: set[str]) -> list[str]:
        """``commit wait``'s lines for the jobs ``failed`` made unrunnable, and theirs."""
        lines = []
        for job in reversed(self.list_jobs()):
            if job.state == "unrunnable" and job.id not in seen \
                    and job.error.startswith(f"upstream job {failed.id} "):
                seen.add(job.id)
                lines.append(f"pipeline {job.pipeline} job {job.id} unrunnable: {job.error}")
                lines += self._unrunnable_report(job, seen)
        return lines

    # -- running a job (in a worker thread) --------------------------------------------------

    def run_lock(self, pipeline: str) -> threading.Lock:
        """Held while a job of ``pipeline`` runs, and for a whole ``datum restart`` of one,
        so that neither sees the datum records the other is half-way through."""
        with self._runs_guard:
            return self._runs.setdefault(pipeline, threading.Lock())

    def execute(self, job_id: str) -> None:
        with self.run_lock(self.inspect_job(job_id).pipeline):
            self._execute(job_id)

    def _execute(self, job_id: str) -> None:
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
        if job.state != "egressing":  # else a restart found its output made: only the copy
            job.state, job.started = "running", time.time()
            job.processed = job.skipped = job.failed = job.recovered = 0
            job.error, job.version = "", version
            self._save(job)
        try:
            if job.state == "running":
                if job.spec is not None:
                    self.pfs.repos.create(spec.name, f"output of job {job.id}",
                                          kind="pipeline", exist_ok=True)
                self.jobs.run(job, spec, cancel)
            if job.state == "egressing":
                self.egress(job, spec, cancel)
        except PfsError as e:
            job.state, job.error = "failure", e.message
        except Exception as e:
            log.exception("job %s failed", job.id)
            job.state, job.error = "failure", f"internal error: {e}"
        if cancel.is_set() and job.output is None:
            job.state = "killed"
        if job.state == "egressing":  # the daemon stops: its next start copies again
            self._cancel.pop(job_id, None)
            return
        job.finished = time.time()
        if _left_no_output(job):  # saved first: who sees its end sees them
            self._unrunnable_downstream(job)
        self._save(job)
        if job.spec is not None:  # no later job reuses a one-off job's results
            with self.state.write() as scope:
                self.records.delete_pipeline(scope, job.pipeline)
        self._cancel.pop(job_id, None)

    def egress(self, job: Job, spec: Spec, cancel: threading.Event) -> None:
        """Copy an ``egressing`` job's output commit to the spec's egress (its record says
        ``egressing`` meanwhile, so ``commit wait`` does not return yet), then ``success``;
        a failed copy is ``failure`` with the egress's one line, and the output commit stays,
        as Pachyderm's does. A stopped job's copy ends at the next file: ``killed``, or, when
        the daemon stops, still ``egressing`` (the next daemon copies again). The caller
        saves the job."""
        assert job.output is not None
        self._notify()  # the output commit was saved with the job: waiters see "egressing"
        try:
            egress.send(self.pfs, job.output, spec.egress,
                        lambda: cancel.is_set() or self._closing.is_set())
        except egress.Stopped as e:
            if not self._closing.is_set():
                job.state, job.error = "killed", str(e)
            return
        except PfsError as e:
            job.state, job.error = "failure", e.message
            return
        job.state = "success"

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
        spout = base / "spout.log"
        if job is None and datum is None and spout.is_file():  # a spout's one process
            found.append(spout)
        if datum is not None and not found:
            raise NotFound(f"no logs of datum {datum} in pipeline {pipeline}")
        return found

