"""The wire shapes of pipelines, jobs and datums, and the arguments of their routes. A datum
and the pipeline graph go as the scheduler's own wire shapes (``scheduler.wire``).

Apart from ``wire`` (whose rules hold here too) because a pipeline's ``spec`` is
``scheduler.spec.Spec``, and importing the spec parser costs a CLI command about 100 ms:
only pipeline commands pay for it. The spec language is itself a public format, read from
users' files, not a storage encoding, so the wire shows it as the scheduler parsed it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from scheduler.spec import Spec

# Re-exported: the routes answer with them.
from scheduler.wire import Dag as Dag
from scheduler.wire import DatumDetail as DatumDetail
from scheduler.wire import DatumInfo as DatumInfo

from .wire import doc

_Epoch = Annotated[float, doc("seconds since the epoch")]
_Count = Annotated[int, doc("datums")]


class Pipeline(msgspec.Struct, kw_only=True):
    name: str
    spec: Annotated[Spec, doc("as the scheduler read it (1.x and 2.x forms alike)")]
    created: _Epoch
    updated: _Epoch
    stopped: Annotated[bool, doc("true: new input commits make no jobs")] = False
    version: Annotated[int, doc("1, then one more at each update")] = 1


class Job(msgspec.Struct, kw_only=True):
    id: Annotated[str, doc("32 hex digits")]
    pipeline: str
    inputs: Annotated[dict[str, str], doc('"repo@branch" -> the commit id it read')]
    state: Literal["created", "running", "egressing", "success", "failure", "killed",
                   "unrunnable"] = "created"
    created: _Epoch = 0.0
    started: Annotated[float | None, doc("seconds since the epoch")] = None
    finished: Annotated[float | None, doc("seconds since the epoch")] = None
    datums: _Count = 0
    processed: _Count = 0
    skipped: Annotated[int, doc("datums whose earlier output was reused")] = 0
    failed: _Count = 0
    recovered: Annotated[int, doc("failed datums whose err_cmd exited 0")] = 0
    output: Annotated[str | None, doc('"repo@commit" it wrote')] = None
    error: str = ""
    reprocess: bool = False
    version: Annotated[int, doc("of its pipeline's spec")] = 1
    spec: Annotated[Spec | None, doc("a one-off (1.x) job's own spec")] = None


class PipelineCreateArgs(msgspec.Struct, kw_only=True):
    spec: str  # JSON or YAML text, one or more pipelines
    update: bool = False
    reprocess: bool = False


class SpecArgs(msgspec.Struct, kw_only=True):
    spec: str  # a spec file's text, JSON or YAML (a 1.x job's; pipelines' for a dry run)


class JobListArgs(msgspec.Struct, kw_only=True):
    pipeline: str | None = None


class TimeoutArgs(msgspec.Struct, kw_only=True):
    timeout: float | None = None


class LogArgs(msgspec.Struct, kw_only=True):
    pipeline: str | None = None  # may be left out with ``job``: the job's own
    job: str | None = None
    datum: str | None = None
    follow: bool = False


class DatumListArgs(msgspec.Struct, kw_only=True):
    job: str | None = None


class ReproduceArgs(msgspec.Struct, kw_only=True):
    datum: str | None = None
    job: str | None = None
