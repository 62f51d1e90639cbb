"""The local ``DatumExecutor``: datums run on this machine, ``parallelism`` threads at a time,
each in a bubblewrap sandbox or a Docker container (``scheduler.runners``, ``containers``).

Owns turning a task's content references into what a runner binds (the mount's own path
when the runner may read it, else a copy exported from the model into the datum's scratch
directory; a 1.x view's pieces written out), the tries, the datum's log file under
``<root>/logs/<pipeline>/<job>/<datum>.log`` (read live by ``pfsmount logs``) and storing
``/pfs/out`` as staged content. Knows nothing of jobs' records, skipping or output commits.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from pfsmount.pfs import Pfs
from pfsmount.pfs.export import export
from pfsmount.pfs.state import KIND_FILE, Entry, Staged
from scheduler.containers import DockerRunner
from scheduler.executor import LOG_TAIL, DatumOutcome, DatumTask, InputRef, Output
from scheduler.runners import Runner, SandboxRunner, Task


class LocalExecutor:
    def __init__(self, pfs: Pfs, root: Path, mountpoint: Path | None) -> None:
        self.pfs = pfs
        self.logs = root / "logs"
        self.work = root / "work"
        self.mountpoint = mountpoint
        # The daemon's own places, which the sandbox covers (and a reproduction names).
        self.hidden = (root, *([mountpoint] if mountpoint else []))
        self.sandbox = SandboxRunner(hidden=self.hidden)
        # Docker datums of a job run in long-lived containers of the job's (``Task.pool``).
        self.docker = DockerRunner(self.work, label=str(root))
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Remove what an earlier daemon left in the scratch space."""
        shutil.rmtree(self.work, ignore_errors=True)
        # and the containers it left, should it have been killed (a few seconds at most)
        threading.Thread(target=self.docker.sweep, daemon=True).start()

    def close(self) -> None:
        """Remove the containers datums run in (the daemon stops)."""
        self.docker.close()

    def cancel(self, job: str) -> None:
        with self._lock:
            stop = self._stops.get(job)
        if stop is not None:
            stop.set()

    def run(self, tasks: Sequence[DatumTask], parallelism: int
            ) -> Iterator[tuple[DatumOutcome, Staged | None]]:
        jobs = {t.job for t in tasks}
        with self._lock:  # from now on, ``cancel`` reaches these tasks
            for job in jobs:
                self._stops.setdefault(job, threading.Event())
        return self._run(tasks, parallelism, jobs)

    def _run(self, tasks: Sequence[DatumTask], parallelism: int, jobs: set[str]
             ) -> Iterator[tuple[DatumOutcome, Staged | None]]:
        try:
            with ThreadPoolExecutor(parallelism) as pool:
                yield from pool.map(self.run_one, tasks)
        finally:
            with self._lock:
                for job in jobs:
                    self._stops.pop(job, None)
            for job in jobs:
                self.docker.release(job)
            for job in jobs:  # what datums left behind: a job holds what it runs, no more
                shutil.rmtree(self.work / job, ignore_errors=True)

    def run_one(self, t: DatumTask) -> tuple[DatumOutcome, Staged | None]:
        """Run one task with its tries: the outcome, and its outputs' staged content."""
        with self._lock:
            stop = self._stops.get(t.job) or threading.Event()  # run alone: no cancel
        if stop.is_set():  # a stopped job drains its queue without starting anything
            return DatumOutcome(datum=t.datum, state="stopped", code=None, log=""), None
        scratch = self.work / t.job / t.datum
        started = time.time()
        try:
            binds = self.materialize(t, scratch)
            outcome, staged = self._attempts(t, binds, scratch, stop)
            return msgspec.structs.replace(outcome, started=started,
                                           seconds=time.time() - started), staged
        finally:  # its input copies and /pfs/out, stored by now
            shutil.rmtree(scratch, ignore_errors=True)

    def log_of(self, t: DatumTask) -> Path:
        return self.logs / t.pipeline / t.job / f"{t.datum}.log"

    def _attempts(self, t: DatumTask, binds: list[tuple[Path, str]], scratch: Path,
                  stop: threading.Event) -> tuple[DatumOutcome, Staged | None]:
        logfile = self.log_of(t)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        runner = self.docker if t.image else self.sandbox
        code = None
        for attempt in range(1, t.tries + 1):
            out = scratch / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            with open(logfile, "a") as log_out:
                log_out.write(f"[pfsmount] datum {t.datum} try {attempt} of {t.tries}\n")
            code = runner.run(Task(cmd=t.cmd, stdin=t.stdin, env=t.env, binds=binds, out=out,
                                   log=logfile, working_dir=t.working_dir, timeout=t.timeout,
                                   image=t.image, cancelled=stop, pool=t.job))
            if stop.is_set():
                return DatumOutcome(datum=t.datum, state="stopped", code=code,
                                    log=_tail(logfile)), None
            if code == 0 or code in t.accept:
                outputs, staged = self.pfs.state.stage_tree(out)
                return DatumOutcome(
                    datum=t.datum, state="success", code=code, log=_tail(logfile),
                    outputs=[(p, Output(e.kind, e.size, e.mode, e.mtime, e.ref))
                             for p, e in outputs]), staged
            with open(logfile, "a") as log_out:
                log_out.write(f"[pfsmount] exit code {code}\n")
        if t.err_cmd and self._recovers(t, runner, binds, scratch, stop):
            return DatumOutcome(datum=t.datum, state="recovered", code=code,
                                log=_tail(logfile)), None
        return DatumOutcome(datum=t.datum, state="failure", code=code,
                            log=_tail(logfile)), None

    def _recovers(self, t: DatumTask, runner: Runner,
                  binds: list[tuple[Path, str]], scratch: Path, stop: threading.Event
                  ) -> bool:
        """Run a failed datum's ``err_cmd`` over the same inputs (what it writes to
        /pfs/out is dropped: a recovered datum has no output): True when it exits 0."""
        out = scratch / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        logfile = self.log_of(t)
        with open(logfile, "a") as log_out:
            log_out.write(f"[pfsmount] datum {t.datum} failed: running err_cmd\n")
        code = runner.run(Task(cmd=t.err_cmd, stdin=t.err_stdin, env=t.env, binds=binds,
                               out=out, log=logfile, working_dir=t.working_dir,
                               timeout=t.timeout, image=t.image, cancelled=stop,
                               pool=t.job))
        with open(logfile, "a") as log_out:
            log_out.write(f"[pfsmount] err_cmd exit code {code}"
                          f"{': datum recovered' if code == 0 else ''}\n")
        return code == 0 and not stop.is_set()

    # -- inputs ------------------------------------------------------------------------------

    def materialize(self, t: DatumTask, scratch: Path) -> list[tuple[Path, str]]:
        """The binds that show ``t``'s inputs (copies, when needed, go in ``scratch``):
        also what ``pfsmount datum shell`` rebuilds."""
        binds = []
        for n, inp in enumerate(t.inputs):
            if inp.pieces is None:
                binds.append(self._source(inp, scratch, t.image))
            else:
                target = scratch / "v1" / str(n)
                shutil.rmtree(target, ignore_errors=True)
                self._write_pieces(inp, target)
                binds.append((target, inp.inside))
        return binds

    def _source(self, f: InputRef, scratch: Path, image: str) -> tuple[Path, str]:
        """The bind that shows an input at ``f.inside``: (the mount, or a copy; where).
        A container of a root daemon runs as another uid (65534), which a mount private to
        root does not let in: it gets a copy. A symlink is never a bind's source (the bind
        would show what it points to on this machine, e.g. /etc/shadow): its copy's
        directory is bound in its parent's place, so the link resolves inside."""
        rel = f.path.lstrip("/")
        shared = not image or os.getuid() != 0
        if (shared and f.type != "symlink" and self.mountpoint is not None
                and self.mountpoint.is_dir()):
            return self.mountpoint / f.repo / f.commit / rel, f.inside
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
            return link.parent, f.inside.rsplit("/", 1)[0]
        target = base / str(n) / rel if rel else base / str(n)
        export(self.pfs, f"{f.repo}@{f.commit}", target, path=f.path, readable=True)
        return target, f.inside

    def _write_pieces(self, f: InputRef, target: Path) -> None:
        """Write a 1.x view's pieces under ``target`` as files readable by anyone (a
        container may run as another uid); pieces of one file append in order."""
        assert f.pieces is not None
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o755)
        for p in f.pieces:
            rel = p.path.lstrip("/")
            dest = target / rel
            for parent in reversed(dest.relative_to(target).parents[:-1]):
                d = target / parent
                if not d.is_dir():
                    d.mkdir()
                    d.chmod(0o755)
            if p.link:
                os.symlink(p.ref, dest)
                continue
            entry = Entry(KIND_FILE, p.end, 0o644, 0, p.ref)
            with open(dest, "ab") as out:
                for piece in self.pfs.files.read(entry, p.start, p.end - p.start,
                                                 where=f"{p.path} in {f.repo}@{f.commit}"):
                    out.write(piece)
            dest.chmod(0o644)


def _tail(logfile: Path) -> str:
    with open(logfile, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL))
        return f.read().decode(errors="replace")
