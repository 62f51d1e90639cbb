"""The scheduler's rows: pipelines, jobs and datum results, in their state tables.

Owns the encoding of ``pipelines``, ``jobs`` and ``datums`` (state tables that ``store.meta``
lists, reached through ``pfs.state`` in its scopes) and their consistency check, which
``fsck`` runs. A datum result remembers what a successful datum wrote, so a later job with
the same datum (same inputs, same spec) reuses it instead of running it; a failed datum's
run is kept under its job (for ``datum list`` and ``datum restart``), never reused. Nothing
here runs anything or opens a scope of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal, TypeVar

import msgspec

from pfsmount.errors import Corrupt, NotFound
from pfsmount.pfs.state import Entry, Scope, State, Table
from scheduler.spec import Spec

# unrunnable: an upstream job this one needed failed (or was stopped), so it never ran;
# its error names that job.
JobState = Literal["created", "running", "egressing", "success", "failure", "killed",
                   "unrunnable"]
TERMINAL: tuple[JobState, ...] = ("success", "failure", "killed", "unrunnable")


class Pipeline(msgspec.Struct, kw_only=True):
    name: str
    spec: Spec
    created: float
    updated: float
    stopped: bool = False
    version: int = 1


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
    recovered: int = 0  # failed datums whose err_cmd succeeded: the job may still succeed
    output: str | None = None  # "repo@commit"
    error: str = ""
    reprocess: bool = False
    version: int = 1
    spec: Spec | None = None  # a one-off job's own (1.x create-job); else its pipeline's


class DatumResult(msgspec.Struct, kw_only=True):
    """A datum's run: what it wrote (a failed one: nothing), when it started and how long
    its tries took (0: recorded before runs were timed)."""

    job: str
    outputs: list[tuple[str, Entry]]
    started: float = 0.0
    seconds: float = 0.0
    # How a datum that left no output ended in its job (kept under the job, never reused):
    # "" on a datum that succeeded (and on a failure recorded before this field).
    ended: Literal["", "failed", "stopped", "recovered"] = ""


log = logging.getLogger("pfsmount.scheduler")
_R = TypeVar("_R")
_enc = msgspec.msgpack.Encoder()
_pipeline = msgspec.msgpack.Decoder(Pipeline)
_job = msgspec.msgpack.Decoder(Job)
_datum = msgspec.msgpack.Decoder(DatumResult)


class Records:
    """Reads every row checked against its type. A row that cannot be read (written by a
    version that checked less, or damaged) is named in the log once and left out of
    listings, so that the daemon starts and serves everything else; asked for by name, it
    is a ``Corrupt`` error."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.pipelines_table = state.table("pipelines")
        self.jobs_table = state.table("jobs")
        self.datums_table = state.table("datums")
        self._reported: set[tuple[str, bytes]] = set()
        state.keep(self.datum_outputs)
        state.checks.append(self.check)
        state.repairs.append(self.repair)

    def _decode(self, kind: str, decoder: msgspec.msgpack.Decoder[_R], key: bytes,
                raw: bytes | memoryview) -> _R | None:
        try:
            return decoder.decode(raw)
        except (msgspec.DecodeError, ValueError) as e:
            if (kind, key) not in self._reported:
                self._reported.add((kind, key))
                log.warning("stored %s %s cannot be read (%s); it is left out",
                            kind, key.decode(errors="backslashreplace"), e)
            return None

    def _one(self, kind: str, decoder: msgspec.msgpack.Decoder[_R], key: bytes,
             raw: bytes | memoryview) -> _R:
        found = self._decode(kind, decoder, key, raw)
        if found is None:
            raise Corrupt(f"stored {kind} {key.decode(errors='backslashreplace')} cannot be "
                          "read; delete it")
        return found

    @staticmethod
    def _get(scope: Scope, key: str, table: Table) -> bytes | memoryview | None:
        return table.get(scope, key.encode(errors="surrogateescape"))

    def pipeline(self, scope: Scope, name: str) -> Pipeline:
        raw = self._get(scope, name, self.pipelines_table)
        if raw is None:
            raise NotFound(f"pipeline {name} not found")
        return self._one("pipeline", _pipeline, name.encode(), raw)

    def find_pipeline(self, scope: Scope, name: str) -> Pipeline | None:
        raw = self._get(scope, name, self.pipelines_table)
        return None if raw is None else self._one("pipeline", _pipeline, name.encode(), raw)

    def put_pipeline(self, scope: Scope, p: Pipeline) -> None:
        self.pipelines_table.put(scope, p.name.encode(), _enc.encode(p))

    def delete_pipeline(self, scope: Scope, name: str) -> None:
        self.pipelines_table.delete(scope, name.encode())
        self.datums_table.delete_prefix(scope, f"{name}\0".encode())

    def pipelines(self, scope: Scope) -> Iterator[Pipeline]:
        for key, raw in self.pipelines_table.items(scope):
            if (p := self._decode("pipeline", _pipeline, key, raw)) is not None:
                yield p

    def job(self, scope: Scope, job_id: str) -> Job:
        raw = self._get(scope, job_id, self.jobs_table)
        if raw is None:
            raise NotFound(f"job {job_id} not found")
        return self._one("job", _job, job_id.encode(), raw)

    def put_job(self, scope: Scope, job: Job) -> None:
        self.jobs_table.put(scope, job.id.encode(), _enc.encode(job))

    def jobs(self, scope: Scope) -> Iterator[Job]:
        for key, raw in self.jobs_table.items(scope):
            if (job := self._decode("job", _job, key, raw)) is not None:
                yield job

    def datum_outputs(self, scope: Scope) -> Iterator[Entry]:
        """Every remembered datum's outputs: later jobs reuse them, so gc keeps them."""
        for _, raw in self.datums_table.items(scope):
            for _, entry in _datum.decode(raw).outputs:
                yield entry

    @staticmethod
    def _dkey(pipeline: str, digest: str, datum: str) -> bytes:
        return f"{pipeline}\0{digest}\0{datum}".encode()

    def datum(self, scope: Scope, pipeline: str, digest: str, datum: str
              ) -> DatumResult | None:
        raw = self.datums_table.get(scope, self._dkey(pipeline, digest, datum))
        return None if raw is None else _datum.decode(raw)

    def put_datum(self, scope: Scope, pipeline: str, digest: str, datum: str,
                  result: DatumResult) -> None:
        self.datums_table.put(scope, self._dkey(pipeline, digest, datum), _enc.encode(result))

    # A failed datum is kept per job (``datum list``, ``datum restart``), under a key no spec
    # digest takes; a later job never reuses it.
    def failure(self, scope: Scope, pipeline: str, job: str, datum: str) -> DatumResult | None:
        raw = self.datums_table.get(scope, self._dkey(pipeline, f"job:{job}", datum))
        return None if raw is None else _datum.decode(raw)

    def put_failure(self, scope: Scope, pipeline: str, datum: str, result: DatumResult) -> None:
        self.datums_table.put(scope, self._dkey(pipeline, f"job:{result.job}", datum),
                              _enc.encode(result))

    def delete_failure(self, scope: Scope, pipeline: str, job: str, datum: str) -> None:
        self.datums_table.delete(scope, self._dkey(pipeline, f"job:{job}", datum))

    def check(self, scope: Scope) -> Iterator[str]:
        """The scheduler's invariants (``store.meta``), one line per row that breaks one:
        every row decodes as its type, and every datum result's files have their content
        (``gc`` keeps it: later jobs reuse it)."""
        for kind, table, decoder in (("pipeline", self.pipelines_table, _pipeline),
                                     ("job", self.jobs_table, _job)):
            for key, raw in table.items(scope):
                try:
                    decoder.decode(raw)
                except (msgspec.DecodeError, ValueError):
                    yield f"{kind} {key.decode(errors='backslashreplace')}: its record " \
                          "cannot be read"
        for key, raw in self.datums_table.items(scope):
            where = key.decode(errors="backslashreplace").replace("\0", " ")
            try:
                result = _datum.decode(raw)
            except (msgspec.DecodeError, ValueError):
                yield f"datum {where}: its record cannot be read"
                continue
            for path, entry in result.outputs:
                if not self.state.has_content(scope, entry):
                    yield f"datum {where}: the content of its output /{path} is missing"

    def repair(self, scope: Scope, dropped: set[bytes]) -> list[str]:
        """``fsck --repair``: forget every datum result one of whose outputs names content
        that is gone (``dropped`` now, or earlier), so the next job runs the datum again
        instead of committing a file nobody can read. One ``lost`` line each."""
        lost, gone = [], []
        for key, raw in self.datums_table.items(scope):
            try:
                outputs = _datum.decode(raw).outputs
            except (msgspec.DecodeError, ValueError):
                continue  # fsck names it; it holds nothing a job could reuse
            path = next((p for p, e in outputs
                         if e.ref in dropped or not self.state.has_content(scope, e)), None)
            if path is not None:
                gone.append(key)
                where = key.decode(errors="backslashreplace").replace("\0", " ")
                lost.append(f"datum {where}: its output /{path} (its next job runs it again)")
        for key in gone:
            self.datums_table.delete(scope, key)
        return lost
