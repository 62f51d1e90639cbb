"""The LMDB metadata environment: every sub-database, its encoding and its invariants.

This module is the one place that names the sub-databases. Records are msgpack (msgspec
structs declared next to the code that owns them); keys are raw bytes as listed below. The
byte layouts the store itself writes are defined once, in ``rows``.

=============  ===========================================  ================================
sub-database   key                                          value
=============  ===========================================  ================================
``meta``       ``b"schema"``                                 u32 big-endian schema version
``chunks``     BLAKE3 digest of the raw chunk (32 bytes)    ``rows.Location`` (21 bytes)
``contents``   BLAKE3 digest of a whole file (32 bytes)     N x ``rows.TABLE_ROW`` (32 B+u64)
``nodes``      BLAKE3 digest of the encoded node (32 B)     ``tree.Leaf`` / ``tree.Inner``
``repos``      repo name (utf-8)                            ``pfs.model.Repo``
``branches``   repo ``\\0`` branch (utf-8)                  ``pfs.model.Branch``
``commits``    commit id (32 hex chars, ascii)              ``pfs.model.Commit``
``commit_log`` repo ``\\0`` u64 BE start ns + commit id     empty (ordered listing index)
``pipelines``  pipeline name (utf-8)                        ``scheduler.records.Pipeline``
``jobs``       job id (32 hex chars, ascii)                 ``scheduler.records.Job``
``datums``     pipeline ``\\0`` spec digest ``\\0`` datum id  ``scheduler.records.DatumResult``
               (a failed datum: ``job:`` job id in the digest's place)
=============  ===========================================  ================================

The last three are *state tables* (``STATE_TABLES``): the scheduler owns their records and
reaches them only through ``pfs.state``; its ``scheduler.records.check`` (run by ``fsck``)
checks that each row decodes and that each datum result's files have ``contents`` rows.

Invariants (``pfsmount fsck`` checks each one):

1. every ``chunks`` location lies inside an existing pack object;
2. every chunk digest listed in a ``contents`` record has a ``chunks`` entry, and the end
   offsets increase strictly up to the file size;
3. every node reachable from a commit root exists in ``nodes`` and decodes; every file entry's
   content exists in ``contents``; every directory size equals the sum of its entries;
4. every commit's repo exists, its parent (if any) exists in the same repo, a finished commit's
   size equals its root size, and it has one ``commit_log`` row;
5. every branch head is a finished commit of its repo; an open commit is unfinished and
   belongs to that branch;
6. values under content-addressed keys (``chunks``, ``contents``, ``nodes``) never change once
   written: writers may put the same value again, never another one. The one exception is
   garbage collection, which may move a chunk (the same bytes) out of a pack that is mostly
   garbage and point its ``chunks`` row at the new place.

Invariants 1 to 3 are the store's own: ``check`` checks them, and ``sweep`` removes
the garbage; ``pfs.fsck`` and ``pfs.garbage`` call these. Unreferenced ``chunks``,
``contents`` and ``nodes`` rows are garbage, not errors; ``pfs.garbage.collect``
(``pfsmount gc``) removes them, with the packs no row points into.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from pfsmount.errors import Corrupt, StoreFull

SCHEMA_VERSION = 1
SUBDBS: tuple[str, ...] = (
    "meta",
    "chunks",
    "contents",
    "nodes",
    "repos",
    "branches",
    "commits",
    "commit_log",
)
STATE_TABLES = ("pipelines", "jobs", "datums")  # the layers above own these (``pfs.state``)
SUBDBS = SUBDBS + STATE_TABLES
MAP_SIZE = 1 << 40  # address space only; the file grows as data arrives


class Meta:
    """An open LMDB environment with a handle for each sub-database.

    Write transactions are serialized by LMDB itself. The environment is opened with
    ``metasync=False``: each commit is one fsync, and a crash can lose at most the last
    transaction, never corrupt the database.
    """

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(
            str(path),
            map_size=MAP_SIZE,
            max_dbs=len(SUBDBS) + 2,
            max_readers=512,
            metasync=False,
            readahead=False,
        )
        self.db: dict[str, lmdb._Database] = {
            name: self.env.open_db(name.encode()) for name in SUBDBS
        }
        with self.write() as txn:
            raw = txn.get(b"schema", db=self.db["meta"])
            if raw is None:
                txn.put(b"schema", struct.pack(">I", SCHEMA_VERSION), db=self.db["meta"])
            elif struct.unpack(">I", raw)[0] != SCHEMA_VERSION:
                raise Corrupt(
                    f"metadata schema {struct.unpack('>I', raw)[0]} is not the supported "
                    f"{SCHEMA_VERSION}"
                )

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        with self.env.begin(buffers=False) as txn:
            yield txn

    @contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction: committed on success, aborted if the block raises. Out of
        space (the disk, or LMDB's map) is ``StoreFull``, naming what is full."""
        try:
            with self.env.begin(write=True) as txn:
                yield txn
        except lmdb.MapFullError:
            raise StoreFull(f"the store's metadata is full: LMDB's map of {MAP_SIZE} bytes "
                            f"under {self.path} is used up; run `pfsmount gc`") from None
        except lmdb.DiskError:  # ENOSPC
            raise StoreFull.under(self.path.parent) from None

    def close(self) -> None:
        self.env.close()
