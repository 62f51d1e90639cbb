"""The scheduler's wire types that are no stored row: a datum as ``datum list`` shows it,
and one datum's task as ``datum shell``/``datum run`` rebuild it (``executor.DatumTask``, the
task an executor runs, with its inputs' binds on the daemon's host filled in). Plain data,
importable by the CLI without the scheduler; nothing here reads the store or runs anything.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from scheduler.executor import DatumTask

__all__ = ["DatumInfo", "DatumState", "DatumTask"]

DatumState = Literal["success", "failed", "skipped", "not run"]


class DatumInfo(msgspec.Struct, kw_only=True):
    id: str
    job: str
    state: DatumState
    files: list[str]  # "input=repo@commit:/path"
