"""The versioning model's records: repos, branches, commits and what file queries return.

These msgspec structs are both the LMDB row encoding (msgpack) and the API's JSON shape.
Times are seconds since the epoch (float). Nothing here reads or writes storage.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pfsmount.store.sweep import SweepCounts

RepoKind = Literal["input", "pipeline"]
FileType = Literal["file", "dir", "symlink"]


class Repo(msgspec.Struct, kw_only=True):
    name: str
    created: float
    description: str = ""
    kind: RepoKind = "input"
    size: int = 0  # filled in on reads: bytes in the branch heads


class Branch(msgspec.Struct, kw_only=True):
    repo: str
    name: str
    head: str | None = None  # newest finished commit
    open: str | None = None  # commit being written, if any
    created: float = 0.0
    provenance: list[str] = msgspec.field(default_factory=list)  # "repo@branch" it derives from


class Commit(msgspec.Struct, kw_only=True):
    id: str
    repo: str
    branch: str
    parent: str | None
    started: float
    finished: float | None = None
    root: str = ""  # hex digest of the root tree page
    size: int = 0
    provenance: list[str] = msgspec.field(default_factory=list)  # "repo@commit"
    description: str = ""

    @property
    def is_open(self) -> bool:
        return self.finished is None


class FileInfo(msgspec.Struct, kw_only=True):
    path: str  # "/a/b", "/" for the root
    type: FileType
    size: int
    hash: str  # content digest of a file, tree page of a directory, hex
    mode: int
    mtime: float
    target: str | None = None  # symlink target
    commit: str = ""


class FileDiff(msgspec.Struct, kw_only=True):
    path: str
    change: Literal["added", "removed", "modified"]
    old: FileInfo | None = None
    new: FileInfo | None = None


class Counts(msgspec.Struct, kw_only=True):
    """Progress of a put: files and bytes taken in so far."""

    files: int = 0
    bytes: int = 0


class GcReport(SweepCounts, kw_only=True):
    """What ``gc`` removed (or, with ``dry_run``, would remove): the store's sweep counts
    (``store.sweep.SweepCounts`` says what each means) and how long it took."""

    dry_run: bool = False
    seconds: float = 0.0


class FsckReport(msgspec.Struct, kw_only=True):
    """What ``fsck`` found: one human line per problem, and how much it looked at.

    ``pages`` counts distinct tree pages, ``files`` the file and symlink entries in them
    (an entry on a page shared by many commits counts once), ``chunks`` the chunk index rows.
    """

    errors: list[str] = msgspec.field(default_factory=list)
    repos: int = 0
    commits: int = 0
    pages: int = 0
    files: int = 0
    chunks: int = 0
    lost: list[str] = msgspec.field(default_factory=list)  # what ``--repair`` dropped

    @property
    def ok(self) -> bool:
        return not self.errors
