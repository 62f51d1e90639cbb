"""The seam between the engine and whatever runs datums: ``DatumTask`` in, ``DatumOutcome``
out, through a ``DatumExecutor``.

A task names everything one datum (or one 1.x container) needs and nothing of this machine:
its inputs as content references (``repo@commit:/path`` and the content digest, or byte
ranges of files for a 1.x view), the command, stdin, environment, image, working directory,
tries and timeout. It pickles and encodes (msgspec), so an executor may run it in this
process (``scheduler.local_executor``) or ship it elsewhere. An outcome is the datum's exit
status, the tail of its log and, on success, the manifest of what it wrote to ``/pfs/out``.

Plain data and a protocol: importable by the CLI (``datum run|shell`` replays a task) without
the store or the runners. Nothing here runs anything or reads the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from scheduler.runners import Task

if TYPE_CHECKING:
    from pfsmount.pfs.state import Staged

LOG_TAIL = 2000  # bytes of a datum's log an outcome carries


class Piece(msgspec.Struct, array_like=True, frozen=True):
    """Bytes ``start:end`` of one file of an input commit (a 1.x view shows only these)."""

    path: str  # "/a/b"
    link: bool  # a symlink: ``ref`` is its target
    ref: bytes  # the file's content digest
    start: int
    end: int


class InputRef(msgspec.Struct, frozen=True, kw_only=True):
    """One input of a datum, by content: where the datum sees it (``inside``) and which file
    or directory of which commit it is."""

    name: str  # the input's name
    repo: str
    commit: str
    path: str  # "/a/b" in the commit; "/" for the whole commit
    hash: str  # content digest of a file, root page of a directory (hex; "" unknown)
    type: str  # "file", "dir" or "symlink"
    inside: str  # "/pfs/<name>[/path]"
    pieces: list[Piece] | None = None  # a 1.x partial view: only these, under ``inside``


class DatumTask(msgspec.Struct, frozen=True, kw_only=True):
    """One datum (or 1.x container) of a job, as its executor takes it. ``binds``,
    ``hidden`` and ``scratch`` are empty in a task to run; a reproduction (``datum
    run|shell``) fills them with its inputs as the daemon's host holds them."""

    pipeline: str
    job: str
    datum: str
    files: list[str]  # the inputs as people read them: "input=repo@commit:/path"
    inputs: list[InputRef]
    cmd: list[str]
    stdin: str
    env: dict[str, str]
    image: str = ""
    working_dir: str = ""
    timeout: float | None = None
    tries: int = 1
    accept: list[int] = []  # exit codes that succeed besides 0
    err_cmd: list[str] = []  # run once the tries have failed: exit 0 recovers the datum
    err_stdin: str = ""
    binds: list[tuple[str, str]] = []  # host path -> path inside, read-only
    hidden: list[str] = []  # the daemon's own places, which the sandbox covers
    scratch: str = ""  # a token naming the daemon's copies of the inputs, "" when none

    def task(self, out: Path, log: Path) -> Task:
        """One try of a reproduced task on this host, as its runner takes it."""
        return Task(cmd=self.cmd, stdin=self.stdin, env=self.env,
                    binds=[(Path(h), inside) for h, inside in self.binds], out=out, log=log,
                    working_dir=self.working_dir, timeout=self.timeout, image=self.image)


class Output(msgspec.Struct, array_like=True, frozen=True):
    """One file or symlink a datum wrote, by content: the fields of the model's ``Entry``."""

    kind: int
    size: int
    mode: int
    mtime: int
    ref: bytes  # content digest, or a symlink's target


OutcomeState = Literal["success", "failure", "stopped", "recovered"]


class DatumOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a task ended: ``success`` (``outputs`` lists what it wrote, by path in
    ``/pfs/out``), ``failure`` (every try failed), ``recovered`` (every try failed, then
    its ``err_cmd`` exited 0: no outputs, and the job may still succeed) or ``stopped``
    (its job was)."""

    datum: str
    state: OutcomeState
    code: int | None  # the last try's exit status; None when no try ran
    log: str  # the log's last ``LOG_TAIL`` bytes
    outputs: list[tuple[str, Output]] = []
    started: float = 0.0  # seconds since the epoch
    seconds: float = 0.0  # how long its tries took


class DatumExecutor(Protocol):
    """Runs datums. ``run`` takes a job's tasks and yields each one's outcome in task order
    as they finish, at most ``parallelism`` running at once, with the content an outcome's
    manifest names staged in the model (``Staged``: the engine lands it with the datum's
    record) or None when the task did not succeed. ``cancel`` stops the tasks of a job
    that ``run`` took and that have not finished (their outcomes say ``stopped``); the
    caller sees to a cancel that comes before ``run``."""

    def run(self, tasks: Sequence[DatumTask], parallelism: int
            ) -> Iterator[tuple[DatumOutcome, Staged | None]]: ...

    def cancel(self, job: str) -> None: ...
