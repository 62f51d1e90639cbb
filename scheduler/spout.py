"""Spouts: a pipeline with no input whose one long-running process makes commits to its
output repo (Pachyderm's ``spout``).

The process runs in the pipeline's runner as a datum would (``transform.image``: Docker,
else the bubblewrap sandbox; no network, no daemon socket, no path of the daemon's host but
its own ``/pfs/out``). It hands over a commit through that directory alone: it writes the
commit's files under ``/pfs/out``, then creates ``/pfs/out/.pfsmount-commit`` (``COMMIT``)
and waits until that file is gone::

    touch /pfs/out/.pfsmount-commit
    while [ -e /pfs/out/.pfsmount-commit ]; do sleep 0.1; done

The daemon, which looks every ``POLL`` seconds, stores what ``/pfs/out`` holds (the marker
aside) as a finished commit on the output branch, then empties ``/pfs/out`` and removes the
marker last. With ``spout.overwrite`` the commit holds only those files; without, they are
added to (and replace paths of) the previous commit, as Pachyderm's put file does. No
channel into the daemon is opened for it: the daemon reads a directory of its own, as it
reads a datum's ``/pfs/out``, so nothing a spout does reaches the API.

A process that ends (however it ends) is started again after a backoff (``BACKOFF`` s,
doubling to ``MAX_BACKOFF``, back to the start once a run lasted ``MAX_BACKOFF``); what it
left in ``/pfs/out`` without the marker is dropped. ``stop`` kills it and ends the loop.
Owns one spout's process, its directory and its commits; knows nothing of jobs, and the
engine decides when a spout runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pfsmount.pfs.state import Change
from scheduler.runners import Runner, Task, empty_dir
from scheduler.spec import Spec

if TYPE_CHECKING:
    from pfsmount.pfs import Commit, Pfs

log = logging.getLogger("pfsmount.scheduler")
COMMIT = ".pfsmount-commit"
POLL = 0.1
BACKOFF = 1.0
MAX_BACKOFF = 60.0


class Spout:
    """One spout pipeline's process, restarted until ``stop``; ``work`` is a directory of
    its own (its ``/pfs/out`` is below it), ``log`` its log file."""

    def __init__(self, pfs: Pfs, spec: Spec, runner: Runner, work: Path, log_file: Path
                 ) -> None:
        assert spec.spout is not None
        self.pfs = pfs
        self.spec = spec
        self.runner = runner
        self.work = work
        self.out = work / "out"
        self.log = log_file
        self.stopped = threading.Event()
        self.commits = 0  # made by this daemon
        self._lock = threading.Lock()  # ``/pfs/out`` is emptied by one thread at a time
        self._threads = [threading.Thread(target=self._run, name=f"spout-{spec.name}",
                                          daemon=True),
                         threading.Thread(target=self._watch, name=f"spout-{spec.name}-out",
                                          daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Kill the process and wait for both threads (a commit being made is finished)."""
        self.stopped.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)

    # -- the process -------------------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF
        while not self.stopped.is_set():
            began = time.monotonic()
            try:
                code: int | None = self._once()
            except Exception as e:  # no Docker engine, a missing image, /pfs/out not
                # emptied: said in its log, tried again (a thread that ended would be silent)
                log.warning("spout %s cannot start: %s", self.spec.name, e)
                with contextlib.suppress(OSError):
                    self._say(f"cannot start: {e}")
                code = None
            if self.stopped.is_set():
                return
            if time.monotonic() - began >= MAX_BACKOFF:
                delay = BACKOFF
            with contextlib.suppress(OSError):
                self._say(f"spout exited ({code}); starting again in {delay:g} s")
            self.stopped.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _once(self) -> int:
        """One run of the process, in an emptied ``/pfs/out``."""
        with self._lock:
            _empty(self.out)
        self._say(f"spout {self.spec.name} starts")
        return self.runner.run(self._task())

    def _say(self, line: str) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as f:
            f.write(f"[pfsmount] {line}\n")

    def _task(self) -> Task:
        t = self.spec.transform
        return Task(cmd=t.cmd, stdin="".join(f"{x}\n" for x in t.stdin),
                    env={**t.env, "PPS_PIPELINE_NAME": self.spec.name, "PFS_OUT": "/pfs/out",
                         "PFS_SPOUT_COMMIT": f"/pfs/out/{COMMIT}"},
                    binds=[], out=self.out, log=self.log, working_dir=t.working_dir,
                    image=t.image, cancelled=self.stopped)

    # -- its commits -------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self.stopped.wait(POLL):
            if (self.out / COMMIT).is_file():
                try:
                    self.commit()
                except Exception:  # the spout waits on: the next look tries again
                    log.exception("spout %s: cannot commit yet", self.spec.name)
                    self.stopped.wait(1.0)

    def commit(self) -> Commit:
        """Store ``/pfs/out`` as the next output commit, then empty it, the marker last."""
        with self._lock:
            return self._commit()

    def _commit(self) -> Commit:
        outputs, staged = self.pfs.state.stage_tree(self.out)
        changes: dict[str, Change] = {p: e for p, e in outputs if p.strip("/") != COMMIT}
        self.pfs.state.land([staged])
        spec = self.spec
        assert spec.spout is not None
        head = self.pfs.repos.inspect_branch(spec.name, spec.output_branch).head
        commit = self.pfs.files.write_snapshot(
            spec.name, spec.output_branch, changes,
            base=None if spec.spout.overwrite else head,
            description=f"spout {spec.name}")
        try:
            _empty(self.out)
        except OSError as e:  # committed: the marker must go, or the next look commits again
            (self.out / COMMIT).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self._say(f"cannot empty /pfs/out after commit {commit.id}: {e}")
        self.commits += 1
        return commit



def _empty(top: Path) -> None:
    """Make ``top`` an empty directory; the marker goes last (the spout waits on it)."""
    top.mkdir(parents=True, exist_ok=True)
    empty_dir(top, last=COMMIT)
