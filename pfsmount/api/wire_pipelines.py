"""The wire shapes of pipelines, jobs and datums, and the arguments of their routes.

Apart from ``wire`` (whose rules hold here too) because a pipeline's ``spec`` is
``scheduler.spec.Spec``, and importing the spec parser costs a CLI command about 100 ms:
only pipeline commands pay for it. The spec language is itself a public format, read from
users' files, not a storage encoding, so the wire shows it as the scheduler parsed it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from scheduler.spec import Spec


class Pipeline(msgspec.Struct, kw_only=True):
    name: str
    spec: Spec
    created: float
    updated: float
    stopped: bool = False
    version: int = 1


JobState = Literal["created", "running", "success", "failure", "killed"]


class Job(msgspec.Struct, kw_only=True):
    id: str
    pipeline: str
    inputs: dict[str, str]  # "repo@branch" -> commit id
    state: JobState = "created"
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    datums: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    output: str | None = None  # "repo@commit"
    error: str = ""
    reprocess: bool = False
    version: int = 1
    spec: Spec | None = None  # a one-off job's own (1.x create-job); else its pipeline's


class DatumInfo(msgspec.Struct, kw_only=True):
    id: str
    job: str
    state: Literal["success", "failed", "skipped", "not run"]
    files: list[str]  # "input=repo@commit:/path"


class PipelineCreateArgs(msgspec.Struct, kw_only=True):
    spec: str  # JSON or YAML text, one or more pipelines
    update: bool = False
    reprocess: bool = False


class SpecArgs(msgspec.Struct, kw_only=True):
    spec: str  # a 1.x job spec, JSON or YAML


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
