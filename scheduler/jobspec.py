"""Pachyderm 1.x job specs (``create-job -f``): a one-off job on named input commits.

The 1.3 form: ``transform``, ``inputs`` (each a ``commit`` with ``repo.name`` and ``id``, an
optional ``name`` and ``method``) and ``parallelism`` or ``parallelism_spec``, as the seed's
Jupyter job and 1.3's ``CreateJobRequest`` wrote them. The commit ``id`` is any reference
pfsmount takes after a repo: 1.x's ``branch/N``, a commit id or prefix, or a branch (its head
when the job is created). Reads text into a checked ``JobSpec``, one line naming the field
when it cannot; the scheduler resolves the commits. Nothing here touches storage.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from pfsmount.errors import InvalidArgument
from pfsmount.pfs.refs import check_name
from scheduler.fields import Name, typed, without_nulls
from scheduler.inputs import Method, RawMethod, RawRepo, method
from scheduler.spec import (
    Transform,
    _documents,
    _norm,
    _parallelism,
    _RawParallelism,
    _RawPipeline,
    _RawSpec,
    _RawTransform,
    _transform,
    _Workers,
)


class JobInput(msgspec.Struct, kw_only=True, frozen=True):
    name: str  # the directory under /pfs
    repo: str
    commit: str  # as written: branch/N, a commit id or prefix, or a branch
    method: Method


class JobSpec(msgspec.Struct, kw_only=True, frozen=True):
    transform: Transform
    inputs: list[JobInput]
    parallelism: int = 1


class _RawCommit(msgspec.Struct, forbid_unknown_fields=True):
    repo: RawRepo
    id: Name


class _RawJobInput(msgspec.Struct, forbid_unknown_fields=True):
    commit: _RawCommit
    name: str = ""
    method: str | RawMethod | None = None


class _RawJob(msgspec.Struct, forbid_unknown_fields=True):
    transform: _RawTransform
    inputs: Annotated[list[_RawJobInput], msgspec.Meta(min_length=1)]
    parallelism_spec: _RawParallelism | None = None
    parallelism: _Workers | None = None


def parse_job_spec(text: str) -> JobSpec:
    """The one job of a spec file's text; raises ``InvalidArgument`` naming the field."""
    docs = _documents(text)
    if len(docs) != 1:
        raise InvalidArgument(f"a job spec file holds exactly one job, not {len(docs)}")
    raw = docs[0]
    if not isinstance(raw, dict):
        raise InvalidArgument("a job spec must be an object")
    raw = without_nulls(_norm(raw))
    if "pipeline" in raw:
        raise InvalidArgument("spec field pipeline makes this a pipeline: use "
                              "create-pipeline -f (create-job runs one job on named commits)")
    if "service" in raw:
        raise InvalidArgument("spec field service is not supported by pfsmount: jobs run "
                              "without network; `pfsmount notebook REF...` serves Jupyter "
                              "on exact commits")
    if "input" in raw and "inputs" not in raw:
        raise InvalidArgument("spec field input is the 2.x pipeline form: a job takes "
                              "inputs, a list of {commit: {repo: {name}, id}}")
    job = typed(raw, _RawJob, "")
    t = job.transform
    if t.overwrite is not None:
        raise InvalidArgument("spec field transform.overwrite has no meaning for a job "
                              "(it has no previous output)")
    transform = _transform(t)
    inputs = []
    for i, item in enumerate(job.inputs):
        where = f"inputs[{i}]."
        repo = check_name("repo", item.commit.repo.name)
        name = check_name("input", item.name or repo)
        if name in ("out", "prev"):
            raise InvalidArgument(f"spec field {where}name {name!r} is reserved for /pfs/{name}")
        inputs.append(JobInput(name=name, repo=repo, commit=item.commit.id,
                               method=method(item.method, where)))
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"spec inputs share a name ({', '.join(names)}): set input names")
    workers = _parallelism(_RawSpec(pipeline=_RawPipeline(name="job"), transform=t,
                                    parallelism_spec=job.parallelism_spec,
                                    parallelism=job.parallelism))
    return JobSpec(transform=transform, inputs=inputs, parallelism=workers)
