"""Datums: how a job's input commits split into units of work, and each unit's identity.

A ``pfs`` input's glob picks files or directories of its commit; each match is a datum.
``cross`` takes every combination of its children's datums, ``union`` all of them in turn,
as Pachyderm does. A datum's id hashes its inputs' names, paths and content hashes (not
commit ids), so the same data in a later commit is the same datum and can be skipped.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import NamedTuple

from pfsmount.pfs import Pfs
from scheduler.spec import Input


class DatumFile(NamedTuple):
    input: str  # the input's name: it appears at /pfs/<input>/
    repo: str
    commit: str
    path: str  # "/a/b" within the repo; "/" for the whole commit
    hash: str
    type: str  # "file", "dir" or "symlink"


class Datum(NamedTuple):
    id: str
    files: tuple[DatumFile, ...]


def datum_id(files: tuple[DatumFile, ...]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(files):
        h.update(f"{f.input}\0{f.path}\0{f.hash}\n".encode())
    return h.hexdigest()


def _groups(pfs: Pfs, inp: Input, commits: dict[str, str]) -> list[tuple[DatumFile, ...]]:
    if inp.pfs is not None:
        leaf = inp.pfs
        commit = commits.get(f"{leaf.repo}@{leaf.branch}")
        if commit is None:
            return []
        return [
            (DatumFile(leaf.name, leaf.repo, commit, info.path, info.hash, info.type),)
            for info in pfs.files.glob(f"{leaf.repo}@{commit}", leaf.glob)
        ]
    children = [_groups(pfs, child, commits) for child in (inp.cross or inp.union or [])]
    if inp.union is not None:
        return [group for child in children for group in child]
    return [tuple(f for part in combo for f in part) for combo in itertools.product(*children)]


def datums(pfs: Pfs, inp: Input, commits: dict[str, str]) -> list[Datum]:
    """The datums of ``inp`` over ``commits`` (``repo@branch`` -> commit id), in order."""
    return [Datum(datum_id(files), files) for files in _groups(pfs, inp, commits)]
