"""The scheduler's wire types that are no stored row: a datum as ``datum list`` shows it,
and one datum's task as ``datum shell``/``datum run`` rebuild it. Plain data, importable by
the CLI without the scheduler; nothing here reads the store or runs anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from scheduler.runners import Task

DatumState = Literal["success", "failed", "skipped", "not run"]


class DatumInfo(msgspec.Struct, kw_only=True):
    id: str
    job: str
    state: DatumState
    files: list[str]  # "input=repo@commit:/path"


class DatumTask(msgspec.Struct, kw_only=True):
    """Everything a runner took to run one datum of a finished job, but its ``/pfs/out``
    and log, which the one reproducing it brings."""

    pipeline: str
    job: str
    datum: str
    files: list[str]
    cmd: list[str]
    stdin: str
    env: dict[str, str]
    binds: list[tuple[str, str]]  # host path -> path inside, read-only
    working_dir: str
    image: str
    timeout: float | None
    hidden: list[str]  # the daemon's own places, which the sandbox covers
    scratch: str = ""  # a token naming the daemon's copies of the inputs, "" when none

    def task(self, out: Path, log: Path) -> Task:
        return Task(cmd=self.cmd, stdin=self.stdin, env=self.env,
                    binds=[(Path(h), inside) for h, inside in self.binds], out=out, log=log,
                    working_dir=self.working_dir, timeout=self.timeout, image=self.image)
