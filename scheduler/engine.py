"""The scheduler: pipelines, the jobs their input commits trigger, and running them.

A finished commit on a branch a pipeline reads creates a job (persisted first, so a daemon
that dies mid-job reruns it on restart). A job splits its inputs into datums, reuses the
result of every datum an earlier successful job of the same spec already ran, runs the rest
``parallelism`` at a time with retries, and writes the union of all datums' outputs as the
next commit of the pipeline's output repo, whose provenance names the input commits. That
commit triggers downstream pipelines in turn. A failed job moves nothing.
"""

from __future__ import annotations

import contextlib
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

import lmdb
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
from pfsmount.store import KIND_DIR, KIND_FILE, Entry, WriteBatch
from pfsmount.store.tree import Change
from scheduler.datums import Datum, DatumFile, datums
from scheduler.records import TERMINAL, DatumResult, Job, Pipeline, Records
from scheduler.runners import DockerRunner, SandboxRunner, Task
from scheduler.spec import Spec

log = logging.getLogger("pfsmount.scheduler")
LOG_TAIL = 2000  # bytes of a failing datum's log kept in the job
_T = TypeVar("_T")
_SKIP, _STOPPED = "skip", "stopped"  # wait_commit outcomes other than a job
_TRY = re.compile(r"^\[pfsmount\] datum \S+ try \d+ of \d+$", re.M)  # starts a try's log


class Scheduler:
    def __init__(self, pfs: Pfs, root: Path, mountpoint: Path | None) -> None:
        self.pfs = pfs
        self.meta = pfs.store.meta
        self.records = Records(pfs.store.meta)
        pfs.gc_roots.append(self.records.datum_outputs)
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
        with self.meta.read() as txn:
            jobs = [j for j in self.records.jobs(txn) if j.state not in TERMINAL]
        return [j.id for j in sorted(jobs, key=lambda j: j.created)]

    def _catch_up(self, pipeline: Pipeline) -> None:
        heads = self._heads(pipeline.spec)
        if not heads:
            return
        with self.meta.read() as txn:
            seen = any(j.pipeline == pipeline.name and j.inputs == heads
                       for j in self.records.jobs(txn))
        if not seen:
            self._new_job(pipeline.name, heads)

    def _on_event(self, event: Event) -> None:
        if event.kind == "commit_finished" and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._queue_trigger, event)

    def _queue_trigger(self, event: Event) -> None:
        # Create jobs off the trio thread (an LMDB write), then queue them.
        async def trigger() -> None:
            ids = await trio.to_thread.run_sync(self._trigger, event)
            for job_id in ids:
                await self._queue_send.send(job_id)

        trio.lowlevel.spawn_system_task(trigger)

    def _trigger(self, event: Event) -> list[str]:
        assert event.branch is not None and event.commit is not None
        key = f"{event.repo}@{event.branch}"
        ids = []
        for pipeline in self.list_pipelines():
            leaves = pipeline.spec.input.leaves()
            if pipeline.stopped or not any(f"{x.repo}@{x.branch}" == key for x in leaves):
                continue
            heads = self._heads(pipeline.spec)
            heads[key] = event.commit
            ids.append(self._new_job(pipeline.name, heads).id)
        return ids

    async def _dispatch(self) -> None:
        locks: dict[str, trio.Lock] = {}
        async with trio.open_nursery() as nursery:
            async for job_id in self._queue_recv:
                with self.meta.read() as txn:
                    pipeline = self.records.job(txn, job_id).pipeline
                lock = locks.setdefault(pipeline, trio.Lock())
                nursery.start_soon(self._run_job, lock, job_id)

    async def _run_job(self, lock: trio.Lock, job_id: str) -> None:
        async with lock:  # one job at a time per pipeline, in arrival order
            await trio.to_thread.run_sync(self.execute, job_id)

    # -- pipelines ---------------------------------------------------------------------------

    def _heads(self, spec: Spec) -> dict[str, str]:
        heads = {}
        with self.meta.read() as txn:
            for leaf in spec.input.leaves():
                branch = self.pfs.records.find_branch(txn, leaf.repo, leaf.branch)
                if branch is not None and branch.head is not None:
                    heads[f"{leaf.repo}@{leaf.branch}"] = branch.head
        return heads

    def _upstream(self, txn: lmdb.Transaction, spec: Spec) -> set[str]:
        """Every repo the spec's output depends on, through other pipelines."""
        seen: set[str] = set()
        todo = [leaf.repo for leaf in spec.input.leaves()]
        while todo:
            repo = todo.pop()
            if repo in seen:
                continue
            seen.add(repo)
            other = self.records.find_pipeline(txn, repo)
            if other is not None:
                todo.extend(leaf.repo for leaf in other.spec.input.leaves())
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
        with self.meta.read() as txn:
            for leaf in spec.input.leaves():
                if not self.pfs.records.has_repo(txn, leaf.repo) and leaf.repo not in planned:
                    raise InvalidArgument(f"pipeline {spec.name}: input repo {leaf.repo} "
                                          "does not exist")
            if spec.name in self._upstream(txn, spec):
                raise InvalidArgument(f"pipeline {spec.name}: its inputs depend on its own "
                                      "output (a cycle in the pipeline graph)")
            existing = self.records.find_pipeline(txn, spec.name)
            if existing is not None and not update:
                raise AlreadyExists(f"pipeline {spec.name} already exists (use update)")
            if existing is None and update:
                raise NotFound(f"pipeline {spec.name} not found")
            if (existing is None and self.pfs.records.has_repo(txn, spec.name)
                    and self.pfs.records.repo(txn, spec.name).kind != "pipeline"):
                raise Conflict(f"repo {spec.name} already exists and is not a pipeline's output")
        return existing

    def create_pipeline(self, spec: Spec, update: bool = False,
                        reprocess: bool = False) -> Pipeline:
        existing = self.check_pipeline(spec, update)
        with self.meta.read() as txn:
            made = not self.pfs.records.has_repo(txn, spec.name)
        self.pfs.repos.create(spec.name, spec.description, kind="pipeline", exist_ok=True)
        try:
            self.pfs.repos.create_branch(
                spec.name, spec.output_branch,
                provenance=[f"{x.repo}@{x.branch}" for x in spec.input.leaves()])
        except BaseException:
            if made:  # no output repo left behind without its pipeline
                self.pfs.repos.delete(spec.name, force=True)
            raise
        now = time.time()
        with self.meta.write() as txn:
            version = existing.version + 1 if existing else 1
            pipeline = Pipeline(name=spec.name, spec=spec, created=existing.created
                                if existing else now, updated=now, version=version)
            self.records.put_pipeline(txn, pipeline)
        heads = self._heads(spec)
        if heads:
            job = self._new_job(spec.name, heads, reprocess=reprocess)
            self._enqueue(job.id)
        return pipeline

    def _enqueue(self, job_id: str) -> None:
        if self._token is not None:
            self._token.run_sync_soon(self._queue_send.send_nowait, job_id)

    def list_pipelines(self) -> list[Pipeline]:
        with self.meta.read() as txn:
            return list(self.records.pipelines(txn))

    def inspect_pipeline(self, name: str) -> Pipeline:
        with self.meta.read() as txn:
            return self.records.pipeline(txn, name)

    def delete_pipeline(self, name: str) -> None:
        """Delete a pipeline and its output repo; refused while another pipeline reads it.
        A pipeline whose record cannot be read is deleted all the same."""
        with self.meta.read() as txn:
            with contextlib.suppress(Corrupt):
                self.records.pipeline(txn, name)
            readers = [p.name for p in self.records.pipelines(txn)
                       if any(x.repo == name for x in p.spec.input.leaves())]
            output = self.pfs.records.has_repo(txn, name)
        if readers:
            raise Conflict(f"pipeline {', '.join(readers)} reads {name}; delete it first")
        for job in self.list_jobs(name):
            if job.state not in TERMINAL:
                self.stop_job(job.id)
        with self.meta.write() as txn:
            self.records.delete_pipeline(txn, name)
        if output:
            self.pfs.repos.delete(name, force=True)

    def set_stopped(self, name: str, stopped: bool) -> Pipeline:
        with self.meta.write() as txn:
            pipeline = self.records.pipeline(txn, name)
            pipeline.stopped = stopped
            self.records.put_pipeline(txn, pipeline)
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

    def _save(self, job: Job) -> None:
        with self.meta.write() as txn:
            self.records.put_job(txn, job)
        with self._changed:
            self._changed.notify_all()

    def list_jobs(self, pipeline: str | None = None) -> list[Job]:
        with self.meta.read() as txn:
            jobs = [j for j in self.records.jobs(txn) if pipeline in (None, j.pipeline)]
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def inspect_job(self, job_id: str) -> Job:
        with self.meta.read() as txn:
            return self.records.job(txn, job_id)

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
                if not any(f"{x.repo}@{x.branch}" == key for x in pipeline.spec.input.leaves()):
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
        try:
            pipeline = self.inspect_pipeline(job.pipeline)
        except (NotFound, Corrupt) as e:  # deleted, or its record cannot be read
            job.state, job.finished, job.error = "killed", time.time(), e.message
            self._save(job)
            return
        if pipeline.stopped:
            return  # stays "created" until the pipeline starts again
        cancel = self._cancel.setdefault(job_id, threading.Event())
        job.state, job.started = "running", time.time()
        job.processed = job.skipped = job.failed = 0
        job.error, job.version = "", pipeline.version
        self._save(job)
        try:
            self._execute(job, pipeline.spec, cancel)
        except PfsError as e:
            job.state, job.error = "failure", e.message
        except Exception as e:
            log.exception("job %s failed", job.id)
            job.state, job.error = "failure", f"internal error: {e}"
        if cancel.is_set() and job.output is None:
            job.state = "killed"
        job.finished = time.time()
        self._save(job)
        self._cancel.pop(job_id, None)
        shutil.rmtree(self.work / job.id, ignore_errors=True)

    def _execute(self, job: Job, spec: Spec, cancel: threading.Event) -> None:
        found = datums(self.pfs, spec.input, job.inputs)
        job.datums = len(found)
        results: dict[str, list[tuple[str, Entry]]] = {}
        todo: list[Datum] = []
        with self.meta.read() as txn:
            for d in found:
                done = None if job.reprocess else self.records.datum(
                    txn, spec.name, spec.digest, d.id)
                if done is not None:
                    results[d.id] = done.outputs
                    job.skipped += 1
                else:
                    todo.append(d)
        self._save(job)
        failure: str | None = None
        unsaved: list[tuple[str, list[tuple[str, Entry]], WriteBatch]] = []
        last_save = time.monotonic()
        with ThreadPoolExecutor(spec.parallelism) as pool:
            for d, outcome in zip(todo, pool.map(lambda d: self._run_datum(job, spec, d,
                                                                            cancel), todo),
                                  strict=True):
                if isinstance(outcome, str):
                    job.failed += 1
                    failure = failure or f"datum {d.id} failed after {spec.datum_tries} " \
                                         f"tries{outcome}"
                else:
                    results[d.id] = outcome[0]
                    unsaved.append((d.id, *outcome))
                    job.processed += 1
                if time.monotonic() - last_save > 0.5:  # progress and results, in batches
                    self._save_results(job, spec, unsaved)
                    last_save = time.monotonic()
        self._save_results(job, spec, unsaved)
        if cancel.is_set():
            job.state = "killed"
            return
        if failure is not None:
            job.state, job.error = "failure", failure
            return
        changes = self._union(spec, found, results)
        provenance = self._provenance(job)
        commit = self.pfs.files.write_snapshot(spec.name, spec.output_branch, changes,
                                               provenance=provenance)
        job.output, job.state = f"{spec.name}@{commit.id}", "success"

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
        batch = WriteBatch()
        for path, entries in union.items():
            changes[path] = entries[0] if len(entries) == 1 else self._concat(batch, entries)
        if batch.contents:
            with self.meta.write() as txn:
                self.pfs.store.contents.commit(batch, txn)
        return changes

    def _concat(self, batch: WriteBatch, entries: list[Entry]) -> Entry:
        def pieces() -> list[bytes]:
            return [b"".join(self.pfs.files.read(e)) for e in entries]

        content = self.pfs.store.contents.write_bytes(batch, b"".join(pieces()))
        return Entry(KIND_FILE, content.size, entries[0].mode, time.time_ns(), content.digest)

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

    def _save_results(self, job: Job, spec: Spec,
                      unsaved: list[tuple[str, list[tuple[str, Entry]], WriteBatch]]) -> None:
        """Record finished datums (so a rerun skips them) and the job's progress, in one
        transaction: a transaction per datum would cost more than running it."""
        with self.meta.write() as txn:
            for datum_id, outputs, batch in unsaved:
                self.pfs.store.contents.commit(batch, txn, durable=False)
                self.records.put_datum(txn, spec.name, spec.digest, datum_id,
                                       DatumResult(job=job.id, outputs=outputs))
            self.records.put_job(txn, job)
        unsaved.clear()
        with self._changed:
            self._changed.notify_all()

    def _run_datum(self, job: Job, spec: Spec, d: Datum, cancel: threading.Event
                   ) -> tuple[list[tuple[str, Entry]], WriteBatch] | str:
        """Run one datum with retries: its outputs (stored, not yet indexed), or its log
        tail when every try failed."""
        if cancel.is_set():  # a stopped job drains its queue without starting anything
            return "job stopped"
        scratch = self.work / job.id / d.id
        logfile = self.logs / spec.name / job.id / f"{d.id}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        binds = []
        env = {**spec.transform.env, "PACH_JOB_ID": job.id, "PACH_DATUM_ID": d.id,
               "PPS_PIPELINE_NAME": spec.name, "PFS_OUT": "/pfs/out"}
        for f in d.files:
            inside = f"/pfs/{f.input}{f.path if f.path != '/' else ''}"
            binds.append(self._source(f, scratch, spec.transform.image, inside))
            env[f.input] = inside
        runner = self.docker if spec.transform.image else self.sandbox
        for attempt in range(1, spec.datum_tries + 1):
            out = scratch / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            with open(logfile, "a") as log_out:
                log_out.write(f"[pfsmount] datum {d.id} try {attempt} of {spec.datum_tries}\n")
            task = Task(cmd=spec.transform.cmd, stdin="\n".join(spec.transform.stdin) + "\n",
                        env=env, binds=binds, out=out, log=logfile,
                        working_dir=spec.transform.working_dir, timeout=spec.datum_timeout,
                        image=spec.transform.image, cancelled=cancel)
            code = runner.run(task)
            if cancel.is_set():
                return "job stopped"
            if code == 0 or code in spec.transform.accept_return_code:
                batch = WriteBatch()
                changes = self.pfs.files.ingest_tree(batch, out)
                return sorted((p, e) for p, e in changes.items()
                              if isinstance(e, Entry) and e.kind != KIND_DIR), batch
            with open(logfile, "a") as log_out:
                log_out.write(f"[pfsmount] exit code {code}\n")
        return _failure(code, logfile)

    def logs_for(self, pipeline: str, job: str | None = None, datum: str | None = None
                 ) -> list[Path]:
        """Datum log files, oldest job first."""
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
