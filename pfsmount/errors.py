"""Every error a user can meet, as a class with a message, an HTTP status and an exit code.

Owns the mapping from failure kinds to how each layer reports them: the API server turns a
``PfsError`` into a JSON body ``{"error": code, "message": ...}`` with ``status``; the client
turns that body back into the same class; the CLI prints ``message`` on one line and exits
with ``exit_code``. Nothing here knows about HTTP libraries, FUSE or click.
"""

from __future__ import annotations

import errno
from typing import ClassVar


class PfsError(Exception):
    """Base of all user-facing errors: one clear line, no traceback."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    errno: ClassVar[int] = errno.EIO

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(PfsError):
    """Malformed input: a bad name, reference, path, spec or option."""

    code = "invalid_argument"
    status = 400
    exit_code = 2
    errno = errno.EINVAL


class NameTooLong(InvalidArgument):
    """A name or path longer than a file system takes (ENAMETOOLONG)."""

    code = "name_too_long"
    errno = errno.ENAMETOOLONG


class TooLarge(InvalidArgument):
    """A request body or a text field larger than the daemon accepts."""

    code = "too_large"
    status = 413


class NotFound(PfsError):
    """An unknown repo, branch, commit, file, pipeline or job."""

    code = "not_found"
    status = 404
    exit_code = 3
    errno = errno.ENOENT


class AlreadyExists(PfsError):
    code = "already_exists"
    status = 409
    exit_code = 4
    errno = errno.EEXIST


class Conflict(PfsError):
    """The request is well formed but the current state forbids it (e.g. commit not open)."""

    code = "conflict"
    status = 409
    exit_code = 5
    errno = errno.EBUSY


class ReadOnly(PfsError):
    """A write to a finished commit or to a pipeline's output repo."""

    code = "read_only"
    status = 403
    exit_code = 6
    errno = errno.EROFS


class NotADirectory(PfsError):
    code = "not_a_directory"
    status = 409
    exit_code = 5
    errno = errno.ENOTDIR


class IsADirectory(PfsError):
    code = "is_a_directory"
    status = 409
    exit_code = 5
    errno = errno.EISDIR


class DirectoryNotEmpty(PfsError):
    code = "directory_not_empty"
    status = 409
    exit_code = 5
    errno = errno.ENOTEMPTY


class SourceError(PfsError):
    """Reading the data to put failed: a missing local file or a URL that did not answer."""

    code = "source_error"
    status = 422
    exit_code = 7
    errno = errno.EIO


class DaemonNotRunning(PfsError):
    code = "daemon_not_running"
    status = 503
    exit_code = 8


class DaemonRunning(PfsError):
    code = "daemon_running"
    status = 409
    exit_code = 9


class Corrupt(PfsError):
    """Stored data failed a check: a missing object or a hash that does not match."""

    code = "corrupt"
    status = 500
    exit_code = 10


class StoreFull(PfsError):
    """The disk under the store is full (ENOSPC, EDQUOT, or LMDB out of space): the store is
    to blame, not the data being put, and freeing space there fixes it."""

    code = "store_full"
    status = 507  # Insufficient Storage
    exit_code = 11
    errno = errno.ENOSPC

    @classmethod
    def under(cls, root: object) -> StoreFull:
        return cls(f"the store's disk is full: no space left on the device holding "
                   f"{root}; free space there (delete files or commits, then run "
                   "`pfsmount gc`) and try again")


class StorageUnavailable(PfsError):
    """The object store (S3) cannot be reached, refuses the credentials, or has no such
    bucket: the data is not at fault, and fixing the server or the settings fixes it."""

    code = "storage_unavailable"
    status = 503
    exit_code = 12
    errno = errno.EIO


class Internal(PfsError):
    code = "internal"
    status = 500
    exit_code = 70


ERRORS: dict[str, type[PfsError]] = {
    cls.code: cls
    for cls in (
        PfsError,
        InvalidArgument,
        NameTooLong,
        TooLarge,
        NotFound,
        AlreadyExists,
        Conflict,
        ReadOnly,
        NotADirectory,
        IsADirectory,
        DirectoryNotEmpty,
        SourceError,
        DaemonNotRunning,
        DaemonRunning,
        Corrupt,
        StoreFull,
        StorageUnavailable,
        Internal,
    )
}


def from_code(code: str, message: str) -> PfsError:
    """Rebuild an error received over the wire; unknown codes become ``PfsError``."""
    return ERRORS.get(code, PfsError)(message)
