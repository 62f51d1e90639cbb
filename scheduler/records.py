"""The scheduler's rows: pipelines, jobs and datum results, in their LMDB sub-databases.

Owns the encoding of ``pipelines``, ``jobs`` and ``datums`` (listed in ``store.meta``). A
datum result remembers what a successful datum wrote, so a later job with the same datum
(same inputs, same spec) reuses it instead of running it. Nothing here runs anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Literal, TypeVar

import lmdb
import msgspec

from pfsmount.errors import Corrupt, NotFound
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
    spec: Spec | None = None  # a one-off job's own (1.x create-job); else its pipeline's


class DatumResult(msgspec.Struct, kw_only=True):
    job: str
    outputs: list[tuple[str, Entry]]


log = logging.getLogger("pfsmount.scheduler")
_R = TypeVar("_R")
_MAX_KEY = 511  # bytes in an LMDB key
_enc = msgspec.msgpack.Encoder()
_pipeline = msgspec.msgpack.Decoder(Pipeline)
_job = msgspec.msgpack.Decoder(Job)
_datum = msgspec.msgpack.Decoder(DatumResult)


class Records:
    """Reads every row checked against its type. A row that cannot be read (written by a
    version that checked less, or damaged) is named in the log once and left out of
    listings, so that the daemon starts and serves everything else; asked for by name, it
    is a ``Corrupt`` error."""

    def __init__(self, meta: Meta) -> None:
        self.meta = meta
        self.pipelines_db = meta.db["pipelines"]
        self.jobs_db = meta.db["jobs"]
        self.datums_db = meta.db["datums"]
        self._reported: set[tuple[str, bytes]] = set()

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
    def _get(txn: lmdb.Transaction, key: str, db: Any) -> bytes | memoryview | None:
        """The row under ``key``; a key LMDB cannot hold (empty, too long) is no row."""
        raw = key.encode(errors="surrogateescape")
        return txn.get(raw, db=db) if 0 < len(raw) <= _MAX_KEY else None

    def pipeline(self, txn: lmdb.Transaction, name: str) -> Pipeline:
        raw = self._get(txn, name, self.pipelines_db)
        if raw is None:
            raise NotFound(f"pipeline {name} not found")
        return self._one("pipeline", _pipeline, name.encode(), raw)

    def find_pipeline(self, txn: lmdb.Transaction, name: str) -> Pipeline | None:
        raw = self._get(txn, name, self.pipelines_db)
        return None if raw is None else self._one("pipeline", _pipeline, name.encode(), raw)

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
        for key, raw in txn.cursor(db=self.pipelines_db):
            if (p := self._decode("pipeline", _pipeline, bytes(key), raw)) is not None:
                yield p

    def job(self, txn: lmdb.Transaction, job_id: str) -> Job:
        raw = self._get(txn, job_id, self.jobs_db)
        if raw is None:
            raise NotFound(f"job {job_id} not found")
        return self._one("job", _job, job_id.encode(), raw)

    def put_job(self, txn: lmdb.Transaction, job: Job) -> None:
        txn.put(job.id.encode(), _enc.encode(job), db=self.jobs_db)

    def jobs(self, txn: lmdb.Transaction) -> Iterator[Job]:
        for key, raw in txn.cursor(db=self.jobs_db):
            if (job := self._decode("job", _job, bytes(key), raw)) is not None:
                yield job

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
