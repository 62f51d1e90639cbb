"""The environment Pachyderm gives a datum's program, computed from the datum and its job.

As Pachyderm's worker sets it, so that its example programs run unmodified. For each file of
the datum, by its input's name (as written, not upper-cased):
- ``<input>``: where the datum sees the file, ``/pfs/<input>/<path>`` (``/pfs/<input>`` for a
  whole commit); of several files of one input (a group, a join's outer key) the last;
- ``<input>_COMMIT``: the input commit's id;
- ``PACH_DATUM_<input>_JOIN_ON`` / ``PACH_DATUM_<input>_GROUP_BY``: the file's key in a join
  or group, when it has one;
and ``PACH_DATUM_ID``, ``PACH_JOB_ID``, ``PPS_PIPELINE_NAME``. ``PACH_OUTPUT_COMMIT_ID`` is not
set: pfsmount makes the output commit from the datums' outputs once they have all run, so no
id exists while a datum runs (a 1.x container gets it empty, as ``scheduler.jobs`` says).
Owns the names and values only; what else a task's environment holds (the spec's ``env``,
``PFS_OUT``) is ``scheduler.jobs``'s.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.datums import DatumFile


def inside(f: DatumFile) -> str:
    """Where a datum sees one of its files: ``/pfs/<input>[/path]``."""
    return f"/pfs/{f.input}{f.path if f.path != '/' else ''}"


def datum_env(files: Iterable[DatumFile], datum: str, job: str, pipeline: str
              ) -> dict[str, str]:
    """The variables Pachyderm sets for a datum of ``files``."""
    env: dict[str, str] = {}
    for f in files:
        env[f.input] = inside(f)
        env[f"{f.input}_COMMIT"] = f.commit
        if f.join_on:
            env[f"PACH_DATUM_{f.input}_JOIN_ON"] = f.join_on
        if f.group_by:
            env[f"PACH_DATUM_{f.input}_GROUP_BY"] = f.group_by
    env.update(PACH_DATUM_ID=datum, PACH_JOB_ID=job, PPS_PIPELINE_NAME=pipeline)
    return env
