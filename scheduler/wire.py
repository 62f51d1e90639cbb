"""The scheduler's wire types that are no stored row: a datum as ``datum list``/``datum
inspect`` show it, the pipeline graph as ``pipeline draw`` draws it (``scheduler.dag``), and
one datum's task as ``datum shell``/``datum run`` rebuild it (``executor.DatumTask``, the task
an executor runs, with its inputs' binds on the daemon's host filled in). The API answers
with these shapes as they are (their field descriptions go into its OpenAPI document). Plain
data, importable by the CLI without the scheduler; nothing here reads the store or runs
anything.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from scheduler.executor import DatumTask

__all__ = ["Dag", "DagEdge", "DagNode", "DatumDetail", "DatumInfo", "DatumState", "DatumTask"]

# A job's datum: ran and succeeded in it, reused from an earlier job, failed in it, failed
# but let through by ``transform.err_cmd`` (recovered, as Pachyderm calls it), stopped
# mid-run (its job's ``job_timeout``, or ``job stop``), or never ran
# (its job stopped, or failed before reaching it). A dry run (``datum list -f``): would run,
# or would be reused from an earlier job of the same spec.
DatumState = Literal["success", "failed", "skipped", "recovered", "stopped", "not run",
                     "would run", "would skip"]


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class DatumInfo(msgspec.Struct, kw_only=True):
    id: Annotated[str, _doc("32 hex digits: a hash of its inputs' names, paths and content")]
    pipeline: str
    job: Annotated[str, _doc('the job it belongs to; "" in a dry run')]
    state: DatumState
    files: Annotated[list[str], _doc('its inputs, "input=repo@commit:/path"')]
    started: Annotated[float | None, _doc("seconds since the epoch; the run a skipped "
                                                "datum reuses")] = None
    seconds: Annotated[float | None, _doc("how long its tries took")] = None
    output_bytes: Annotated[int | None, _doc("bytes it wrote to /pfs/out")] = None


class DatumDetail(DatumInfo, kw_only=True):
    """One datum, as ``datum inspect`` shows it."""

    ran_in: Annotated[str, _doc("the job whose run it shows (a skipped datum's: an earlier "
                                "one); \"\" when it has none")] = ""
    outputs: Annotated[list[tuple[str, int]], _doc("each file it wrote and its size")] = []
    log: Annotated[str, _doc("the last lines of its log in this job")] = ""


class DagNode(msgspec.Struct, kw_only=True):
    name: str
    kind: Annotated[Literal["repo", "pipeline"], _doc("a pipeline stands for its output "
                                                      "repo too")]
    job: Annotated[str, _doc("a pipeline's last job; \"\" when it has none")] = ""
    state: Annotated[str, _doc("that job's state; \"\" when there is none")] = ""
    stopped: bool = False
    error: Annotated[str, _doc("the first line of that job's error")] = ""


class DagEdge(msgspec.Struct, kw_only=True):
    source: Annotated[str, _doc("a repo or pipeline that the target reads")]
    target: Annotated[str, _doc("a pipeline")]
    label: Annotated[str, _doc('"branch glob", as the target\'s input reads it')] = ""


class Dag(msgspec.Struct, kw_only=True):
    nodes: list[DagNode]
    edges: list[DagEdge]
