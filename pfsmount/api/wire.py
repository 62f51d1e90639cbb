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

import functools
from typing import Annotated, Any, Literal, get_args, get_origin

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


def doc(text: str) -> msgspec.Meta:
    """A field's description, for the OpenAPI document."""
    return msgspec.Meta(description=text)


def to_wire(value: Any, kind: Any) -> Any:
    """``value`` (records, lists of them, dicts) in the wire shape ``kind``, field by field.

    A record whose type encodes exactly as ``kind`` (``same_encoding``) is returned as it is:
    a listing of a million files pays for no copy while the two shapes agree, and the day a
    stored record changes, its values are converted without anyone asking.
    """
    record: Any = type(value)
    if isinstance(kind, type) and same_encoding(record, kind):
        return value
    return msgspec.convert(value, kind, from_attributes=True)


@functools.cache
def same_encoding(record: Any, wire: Any) -> bool:
    """Whether values of ``record`` encode to the same JSON as ``wire``: the same fields in
    the same order, of the same types (structs compared the same way), with the same
    encoding options. Defaults matter only where ``omit_defaults`` is on, so it must be off."""
    if record is wire:
        return True
    if get_origin(record) is Annotated:
        return same_encoding(get_args(record)[0], wire)
    if get_origin(wire) is Annotated:
        return same_encoding(record, get_args(wire)[0])
    structs = [isinstance(t, type) and issubclass(t, msgspec.Struct) for t in (record, wire)]
    if all(structs):
        ours, theirs = record.__struct_config__, wire.__struct_config__
        options = ("omit_defaults", "array_like", "tag", "tag_field")
        a, b = msgspec.structs.fields(record), msgspec.structs.fields(wire)
        return (all(getattr(ours, o) == getattr(theirs, o) for o in options)
                and not ours.omit_defaults and len(a) == len(b)
                and all(x.encode_name == y.encode_name and same_encoding(x.type, y.type)
                        for x, y in zip(a, b, strict=True)))
    if any(structs):
        return False
    ra, wa = get_args(record), get_args(wire)
    if ra or wa:  # unions, containers, literals
        return (get_origin(record) == get_origin(wire) and len(ra) == len(wa)
                and all(same_encoding(x, y) for x, y in zip(ra, wa, strict=True)))
    return bool(record == wire)


# -- answers ---------------------------------------------------------------------------------


class Error(msgspec.Struct, kw_only=True):
    """Every failure: a stable code (``pfsmount.errors``) and one line for a person."""

    error: str
    message: str


class Repo(msgspec.Struct, kw_only=True):
    name: str
    created: Annotated[float, doc("when it was made, seconds since the epoch")]
    description: str = ""
    kind: Annotated[Literal["input", "pipeline"], doc("pipeline: a pipeline's output")] = "input"
    size: Annotated[int, doc("bytes in its branch heads")] = 0


class Branch(msgspec.Struct, kw_only=True):
    repo: str
    name: str
    head: Annotated[str | None, doc("id of its newest finished commit")] = None
    open: Annotated[str | None, doc("id of the commit being written, if any")] = None
    created: Annotated[float, doc("seconds since the epoch")] = 0.0
    provenance: Annotated[list[str], doc('"repo@branch" it derives from')] = []


class Commit(msgspec.Struct, kw_only=True):
    id: Annotated[str, doc("32 hex digits")]
    repo: str
    branch: str
    parent: Annotated[str | None, doc("id of the commit it follows")]
    started: Annotated[float, doc("seconds since the epoch")]
    finished: Annotated[float | None, doc("null while the commit is open")] = None
    root: Annotated[str, doc("content digest of its root directory")] = ""
    size: Annotated[int, doc("bytes of its files")] = 0
    provenance: Annotated[list[str], doc('"repo@commit" it was derived from')] = []
    description: str = ""

    @property
    def is_open(self) -> bool:
        return self.finished is None


class FileInfo(msgspec.Struct, kw_only=True):
    path: Annotated[str, doc('"/a/b"; "/" for the root')]
    type: Literal["file", "dir", "symlink"]
    size: Annotated[int, doc("bytes (a directory: of the files under it)")]
    hash: Annotated[str, doc("content digest, hex")]
    mode: Annotated[int, doc("permission bits")]
    mtime: Annotated[float, doc("seconds since the epoch")]
    target: Annotated[str | None, doc("a symlink's target")] = None
    commit: Annotated[str, doc("id of the commit it was read from")] = ""


class FileDiff(msgspec.Struct, kw_only=True):
    path: str
    change: Literal["added", "removed", "modified"]
    old: Annotated[FileInfo | None, doc("before; null when added")] = None
    new: Annotated[FileInfo | None, doc("after; null when removed")] = None


class Counts(msgspec.Struct, kw_only=True):
    """Files and bytes taken in (a put) or written out (an export)."""

    files: int = 0
    bytes: int = 0


class PutLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of a put's answer: progress while it runs, then the commit it wrote."""

    progress: Counts | None = None
    commit: Commit | None = None


_Rows = Annotated[int, doc("index rows dropped")]


class GcReport(msgspec.Struct, kw_only=True):
    """What ``gc`` removed or, with ``dry_run``, would remove. Packs mostly garbage are
    emptied: their live chunks are copied to a new pack, and the old ones go at the next
    collection, once no reader can be using them."""

    dry_run: bool = False
    pages: _Rows = 0
    contents: _Rows = 0
    chunks: _Rows = 0
    packs: Annotated[int, doc("pack objects deleted")] = 0
    freed: Annotated[int, doc("bytes of the packs deleted")] = 0
    packs_kept: Annotated[int, doc("packs that hold garbage and stay")] = 0
    garbage_kept: Annotated[int, doc("stored bytes of the garbage in packs kept")] = 0
    compacted: Annotated[int, doc("packs emptied, deleted next time")] = 0
    moved: Annotated[int, doc("bytes copied out of the packs emptied")] = 0
    freed_next: Annotated[int, doc("bytes the next collection frees")] = 0
    seconds: float = 0.0


class FsckReport(msgspec.Struct, kw_only=True):
    """What ``fsck`` found: one line per problem, and how much it looked at."""

    errors: Annotated[list[str], doc("one line per problem; none: all is well")] = []
    repos: int = 0
    commits: int = 0
    pages: Annotated[int, doc("distinct tree pages")] = 0
    files: Annotated[int, doc("file and symlink entries on those pages")] = 0
    chunks: Annotated[int, doc("chunk index rows")] = 0
    lost: Annotated[list[str], doc("files a repair dropped")] = []

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
    ref: Annotated[str, doc("repo/branch, repo@branch, repo@<commit-id>, repo@branch^ ...")]


class CommitFinishArgs(RefArgs, kw_only=True):
    description: str | None = None


class WaitArgs(RefArgs, kw_only=True):
    timeout: Annotated[float | None, doc("seconds; null: no limit")] = None


class FileArgs(RefArgs, kw_only=True):
    path: Annotated[str | None, doc("within the commit, when ref has no :/path")] = None


class PutArgs(FileArgs, kw_only=True):
    """A put of the request's body, or of ``url`` (fetched by the daemon)."""

    append: bool = False
    url: str | None = None


class ImportArgs(FileArgs, kw_only=True):
    """A put of a file or directory on the daemon's host."""

    local: Annotated[str, doc("an absolute path on the daemon's host")]
    append: bool = False


class GetArgs(FileArgs, kw_only=True):
    offset: int = 0
    size: Annotated[int | None, doc("bytes; null: to the end")] = None


class ListArgs(FileArgs, kw_only=True):
    after: Annotated[str | None, doc("a name: only the entries after it")] = None
    limit: int | None = None


class FileDeleteArgs(FileArgs, kw_only=True):
    recursive: bool = False


class ExportArgs(RefArgs, kw_only=True):
    dest: Annotated[str, doc("an absolute path on the daemon's host")]
    recursive: Annotated[bool, doc("false: a directory is refused")] = True


class GlobArgs(RefArgs, kw_only=True):
    pattern: str


class DiffArgs(msgspec.Struct, kw_only=True):
    new: str
    old: Annotated[str | None, doc("null: the new commit's parent")] = None


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
