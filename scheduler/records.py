"""The scheduler's rows: pipelines, jobs and datum results, in their LMDB sub-databases.

Owns the encoding of ``pipelines``, ``jobs`` and ``datums`` (listed in ``store.meta``). A
datum result remembers what a successful datum wrote, so a later job with the same datum
(same inputs, same spec) reuses it instead of running it. Nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import lmdb
import msgspec

from pfsmount.errors import NotFound
from pfsmount.store import Entry
from pfsmount.store.meta import Meta
from scheduler.spec import Spec

JobState = Literal["created", "running", "success", "failure", "killed"]
TERMINAL: tuple[JobState, ...] = ("success", "failure", "killed")


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
    output: str | None = None  # "repo@commit"
    error: str = ""
    reprocess: bool = False
    version: int = 1


class DatumResult(msgspec.Struct, kw_only=True):
    job: str
    outputs: list[tuple[str, Entry]]


_enc = msgspec.msgpack.Encoder()
_pipeline = msgspec.msgpack.Decoder(Pipeline)
_job = msgspec.msgpack.Decoder(Job)
_datum = msgspec.msgpack.Decoder(DatumResult)


class Records:
    def __init__(self, meta: Meta) -> None:
        self.meta = meta
        self.pipelines_db = meta.db["pipelines"]
        self.jobs_db = meta.db["jobs"]
        self.datums_db = meta.db["datums"]

    def pipeline(self, txn: lmdb.Transaction, name: str) -> Pipeline:
        raw = txn.get(name.encode(), db=self.pipelines_db)
        if raw is None:
            raise NotFound(f"pipeline {name} not found")
        return _pipeline.decode(raw)

    def find_pipeline(self, txn: lmdb.Transaction, name: str) -> Pipeline | None:
        raw = txn.get(name.encode(), db=self.pipelines_db)
        return None if raw is None else _pipeline.decode(raw)

    def put_pipeline(self, txn: lmdb.Transaction, p: Pipeline) -> None:
        txn.put(p.name.encode(), _enc.encode(p), db=self.pipelines_db)

    def delete_pipeline(self, txn: lmdb.Transaction, name: str) -> None:
        txn.delete(name.encode(), db=self.pipelines_db)
        prefix = f"{name}\0".encode()
        cur = txn.cursor(db=self.datums_db)
        if cur.set_range(prefix):
            while bytes(cur.key()).startswith(prefix):
                if not cur.delete():
                    break

    def pipelines(self, txn: lmdb.Transaction) -> Iterator[Pipeline]:
        for _, raw in txn.cursor(db=self.pipelines_db):
            yield _pipeline.decode(raw)

    def job(self, txn: lmdb.Transaction, job_id: str) -> Job:
        raw = txn.get(job_id.encode(), db=self.jobs_db)
        if raw is None:
            raise NotFound(f"job {job_id} not found")
        return _job.decode(raw)

    def put_job(self, txn: lmdb.Transaction, job: Job) -> None:
        txn.put(job.id.encode(), _enc.encode(job), db=self.jobs_db)

    def jobs(self, txn: lmdb.Transaction) -> Iterator[Job]:
        for _, raw in txn.cursor(db=self.jobs_db):
            yield _job.decode(raw)

    def datum_outputs(self, txn: lmdb.Transaction) -> Iterator[Entry]:
        """Every remembered datum's outputs: later jobs reuse them, so gc keeps them."""
        for _, raw in txn.cursor(db=self.datums_db):
            for _, entry in _datum.decode(raw).outputs:
                yield entry

    @staticmethod
    def _dkey(pipeline: str, digest: str, datum: str) -> bytes:
        return f"{pipeline}\0{digest}\0{datum}".encode()

    def datum(self, txn: lmdb.Transaction, pipeline: str, digest: str, datum: str
              ) -> DatumResult | None:
        raw = txn.get(self._dkey(pipeline, digest, datum), db=self.datums_db)
        return None if raw is None else _datum.decode(raw)

    def put_datum(self, txn: lmdb.Transaction, pipeline: str, digest: str, datum: str,
                  result: DatumResult) -> None:
        txn.put(self._dkey(pipeline, digest, datum), _enc.encode(result), db=self.datums_db)
