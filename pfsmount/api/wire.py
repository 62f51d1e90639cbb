"""What crosses the socket: the API's own JSON shapes, and how values and errors are encoded.

These structs are the contract with clients. They are not the stored records
(``pfsmount.pfs.model``, ``scheduler.records``): the server converts a record to its wire
shape by field name (``to_wire``), so a record may gain, lose or re-encode a field without a
client seeing it, and a wire field changes only on purpose. Their JSON is what ``--json``
prints. Pipelines, jobs and datums are in ``wire_pipelines``.

Request arguments are structs too (``...Args``): a route declares one, the server decodes it
(``pfsmount.api.endpoint``) and the OpenAPI document describes it. ``None`` in an argument
means "not given".

Listings stream as NDJSON (one JSON value per line). A streamed operation that fails after
its first line ends with an ``{"error": code, "message": ...}`` line.

Nothing here reads storage or imports the model; it must stay cheap to import (the CLI does).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from pfsmount.errors import PfsError

API_PREFIX = "/v1"
_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def encode_line(value: Any) -> bytes:
    return _encoder.encode(value) + b"\n"


def error_body(err: PfsError) -> dict[str, str]:
    return {"error": err.code, "message": err.message}


def to_wire(value: Any, kind: Any) -> Any:
    """``value`` (records, lists of them, dicts) in the wire shape ``kind``, field by field."""
    return msgspec.convert(value, kind, from_attributes=True)


# -- answers ---------------------------------------------------------------------------------


class Error(msgspec.Struct, kw_only=True):
    """Every failure: a stable code (``pfsmount.errors``) and one line for a person."""

    error: str
    message: str


class Repo(msgspec.Struct, kw_only=True):
    name: str
    created: float
    description: str = ""
    kind: Literal["input", "pipeline"] = "input"
    size: int = 0  # bytes in the branch heads


class Branch(msgspec.Struct, kw_only=True):
    repo: str
    name: str
    head: str | None = None  # newest finished commit
    open: str | None = None  # commit being written, if any
    created: float = 0.0
    provenance: list[str] = msgspec.field(default_factory=list)  # "repo@branch"


class Commit(msgspec.Struct, kw_only=True):
    id: str
    repo: str
    branch: str
    parent: str | None
    started: float
    finished: float | None = None
    root: str = ""  # content digest of the commit's root directory
    size: int = 0
    provenance: list[str] = msgspec.field(default_factory=list)  # "repo@commit"
    description: str = ""

    @property
    def is_open(self) -> bool:
        return self.finished is None


class FileInfo(msgspec.Struct, kw_only=True):
    path: str  # "/a/b", "/" for the root
    type: Literal["file", "dir", "symlink"]
    size: int
    hash: str  # content digest, hex
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
    """Files and bytes taken in (a put) or written out (an export)."""

    files: int = 0
    bytes: int = 0


class PutLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of a put's answer: progress while it runs, then the commit it wrote."""

    progress: Counts | None = None
    commit: Commit | None = None


class GcReport(msgspec.Struct, kw_only=True):
    """What ``gc`` removed or, with ``dry_run``, would remove (``pfs.model.GcReport`` says
    what each count is)."""

    dry_run: bool = False
    pages: int = 0
    contents: int = 0
    chunks: int = 0
    packs: int = 0
    freed: int = 0
    packs_kept: int = 0
    garbage_kept: int = 0
    compacted: int = 0
    moved: int = 0
    freed_next: int = 0
    seconds: float = 0.0


class FsckReport(msgspec.Struct, kw_only=True):
    """What ``fsck`` found: one line per problem, and how much it looked at."""

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


class Deleted(msgspec.Struct, kw_only=True):
    deleted: str


class Stopping(msgspec.Struct, kw_only=True):
    stopping: bool


# -- requests (see ``pfsmount.api.endpoint`` for where each goes) ----------------------------


class NoArgs(msgspec.Struct, kw_only=True):
    pass


class RepoCreateArgs(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""


class RepoDeleteArgs(msgspec.Struct, kw_only=True):
    force: bool = False


class BranchCreateArgs(msgspec.Struct, kw_only=True):
    branch: str
    head: str | None = None
    provenance: list[str] | None = None


class CommitListArgs(msgspec.Struct, kw_only=True):
    branch: str | None = None
    limit: int | None = None


class CommitStartArgs(msgspec.Struct, kw_only=True):
    repo: str
    branch: str = "master"
    parent: str | None = None
    description: str = ""


class RefArgs(msgspec.Struct, kw_only=True):
    ref: str


class CommitFinishArgs(msgspec.Struct, kw_only=True):
    ref: str
    description: str | None = None


class WaitArgs(msgspec.Struct, kw_only=True):
    ref: str
    timeout: float | None = None


class PutArgs(msgspec.Struct, kw_only=True):
    """A put of the request's body, or of ``url`` (fetched by the daemon)."""

    ref: str
    path: str | None = None
    append: bool = False
    url: str | None = None


class ImportArgs(msgspec.Struct, kw_only=True):
    """A put of a file or directory on the daemon's host (an absolute path)."""

    ref: str
    local: str
    path: str | None = None
    append: bool = False


class GetArgs(msgspec.Struct, kw_only=True):
    ref: str
    path: str | None = None
    offset: int = 0
    size: int | None = None


class ExportArgs(msgspec.Struct, kw_only=True):
    ref: str
    dest: str  # absolute, on the daemon's host
    recursive: bool = True


class FileArgs(msgspec.Struct, kw_only=True):
    ref: str
    path: str | None = None


class ListArgs(msgspec.Struct, kw_only=True):
    ref: str
    path: str | None = None
    after: str | None = None
    limit: int | None = None


class GlobArgs(msgspec.Struct, kw_only=True):
    ref: str
    pattern: str


class DiffArgs(msgspec.Struct, kw_only=True):
    new: str
    old: str | None = None


class FileDeleteArgs(msgspec.Struct, kw_only=True):
    ref: str
    path: str | None = None
    recursive: bool = False


class CopyArgs(msgspec.Struct, kw_only=True):
    src: str
    dst: str


class FsckArgs(msgspec.Struct, kw_only=True):
    verify: bool = False


class RepairArgs(msgspec.Struct, kw_only=True):
    wait: float = 30.0


class GcArgs(msgspec.Struct, kw_only=True):
    dry_run: bool = False
    wait: float = 30.0
