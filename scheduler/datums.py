"""Datums: how a job's input commits split into units of work, and each unit's identity.

Each input kind (``scheduler.inputs``) makes its datums from a ``Snapshot`` of the job's input
commits: a ``pfs`` input's glob (``pfsmount.pfs.glob``) picks files or directories of its commit,
each match a datum; ``cross`` takes every combination of its children's datums, ``union`` all
of them in turn, ``join`` and ``group`` match files by the keys their globs capture, as
Pachyderm does. A datum's id hashes its inputs' names, paths and content hashes (not
commit ids), so the same data in a later commit is the same datum and can be skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from pfsmount.pfs.model import FileInfo

Captures = tuple[str, ...]

if TYPE_CHECKING:  # the spec reader (and so the CLI) imports this module: keep it light
    from pfsmount.pfs import Pfs
    from pfsmount.pfs.glob import Glob
    from scheduler.inputs import InputKind


class DatumFile(NamedTuple):
    input: str  # the input's name: it appears at /pfs/<input>/
    repo: str
    commit: str
    path: str  # "/a/b" within the repo; "/" for the whole commit
    hash: str
    type: str  # "file", "dir" or "symlink"
    join_on: str = ""  # its key in a join: the input's ``join_on`` over its glob's captures
    group_by: str = ""  # its key in a group, likewise
    empty: bool = False  # its input's ``empty_files``: shown with names only, every file empty


class Datum(NamedTuple):
    id: str
    files: tuple[DatumFile, ...]


class Snapshot:
    """One job's input commits, as an input kind sees them: the commit it pinned of each
    branch, and the files a glob matches in a commit. Kinds make datums from this alone."""

    def __init__(self, pfs: Pfs, commits: Mapping[str, str]) -> None:
        self._pfs = pfs
        self._commits = commits  # "repo@branch" -> commit id

    def commit(self, repo: str, branch: str) -> str | None:
        return self._commits.get(f"{repo}@{branch}")

    def glob(self, repo: str, commit: str, glob: Glob) -> Iterator[tuple[FileInfo, Captures]]:
        """The entries of ``repo@commit`` that ``glob`` matches, each with its captures."""
        for info in self._pfs.files.glob(f"{repo}@{commit}", glob):
            captures = glob.match(info.path)
            assert captures is not None  # files.glob yields matches only
            yield info, captures


def datum_id(files: tuple[DatumFile, ...]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(files):
        h.update(f"{f.input}\0{f.path}\0{f.hash}\n".encode())
    return h.hexdigest()


def datums(pfs: Pfs, inp: InputKind, commits: Mapping[str, str]) -> list[Datum]:
    """The datums of ``inp`` over ``commits`` (``repo@branch`` -> commit id), in order."""
    return [Datum(datum_id(files), files) for files in inp.datums(Snapshot(pfs, commits))]


def no_datums(pfs: Pfs, inp: InputKind, commits: Mapping[str, str]) -> str:
    """Why ``inp`` makes no datums over ``commits``, for a job's note (Pachyderm runs such a
    job, with no datums): the inputs whose glob matches nothing, or else keys that never
    meet (a join, a cross with nothing on one side...)."""
    snapshot = Snapshot(pfs, commits)
    empty = [leaf for leaf in inp.leaves() if not leaf.datums(snapshot)]
    if empty:
        return "no datums: " + "; ".join(
            f"glob {leaf.glob} of input {leaf.name} matches nothing in "
            f"{leaf.repo}@{commits.get(f'{leaf.repo}@{leaf.branch}', leaf.branch)}"
            for leaf in empty)
    return "no datums: every input's glob matches files, but none combine into a datum " \
           "(a join whose keys never meet)"
