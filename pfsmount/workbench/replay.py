"""Runs a reproduced datum (``scheduler.wire.DatumTask``) on the caller's terminal, through
the runners' own command line and container: the transform (``pfsmount datum run``) or a
shell in its place (``datum shell``), with an empty ``/pfs/out`` in a new temp directory.
Client side: nothing here talks to the daemon or knows about jobs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from scheduler.containers import DockerRunner
from scheduler.runners import RunnerError, SandboxRunner, Task, sandboxed
from scheduler.wire import DatumTask


def prepare(t: DatumTask) -> tuple[Task, Path]:
    """The runner's task of ``t`` with a fresh ``/pfs/out``, and the directory holding it."""
    home = Path(tempfile.mkdtemp(prefix=f"pfsmount-datum-{t.datum[:12]}-"))
    out = home / "out"
    out.mkdir()
    return t.task(out, home / "log"), home


def _sandbox(t: DatumTask) -> SandboxRunner:
    return SandboxRunner(hidden=tuple(Path(p) for p in t.hidden))


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    """Ctrl-C belongs to the container (the docker command passes it on), not to us."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def run(t: DatumTask, task: Task) -> int:
    """Run the transform as its runner did; print what it printed. Its exit code."""
    runner = DockerRunner() if t.image else _sandbox(t)
    # Ctrl-C stops the datum as a stopped job does; what it printed is printed all the same.
    old = signal.signal(signal.SIGINT, lambda signum, frame: task.cancelled.set())
    try:
        code = runner.run(task)
    finally:
        signal.signal(signal.SIGINT, old)
    with open(task.log, "rb") as log:
        shutil.copyfileobj(log, sys.stdout.buffer)
    sys.stdout.flush()
    return code


def shell(t: DatumTask, task: Task, program: str) -> int:
    """``program`` in the datum's place, its stdin, stdout and stderr ours. Its exit code."""
    task = dataclasses.replace(task, cmd=[program], stdin="")
    if not t.image:
        # A session of its own: Ctrl-C reaches us alone, and we pass it on, so it stops
        # what the shell runs, not bwrap (ignoring it instead would pass that on inside).
        proc = subprocess.Popen(_sandbox(t).argv(task), start_new_session=True)

        def interrupt(signum: int, frame: object) -> None:
            """Ctrl-C: to the shell's process group (it has no terminal to take it from)."""
            shell = sandboxed(proc.pid)
            with contextlib.suppress(OSError):
                if shell is not None:
                    os.killpg(os.getpgid(shell), signal.SIGINT)

        old = signal.signal(signal.SIGINT, interrupt)
        try:
            return proc.wait()
        finally:
            signal.signal(signal.SIGINT, old)
    if shutil.which("docker") is None:
        raise RunnerError("datum shell in an image needs the docker command")
    container = DockerRunner().create(task, interactive=True, tty=sys.stdin.isatty())
    try:
        with _no_sigint():
            return subprocess.run(["docker", "start", "-ai", container.id]).returncode
    finally:
        container.remove(force=True)
