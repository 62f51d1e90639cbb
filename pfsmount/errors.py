"""Every error a user can meet, as a class with a message, an HTTP status and an exit code.

Owns the mapping from failure kinds to how each layer reports them: the API server turns a
``PfsError`` into a JSON body ``{"error": code, "message": ...}`` with ``status``; the client
turns that body back into the same class; the CLI prints ``message`` on one line and exits
with ``exit_code``. Nothing here knows about HTTP libraries, FUSE or click.
"""

from __future__ import annotations

import errno
from typing import ClassVar

ERRORS: dict[str, type[PfsError]] = {}  # by ``code``: what the client rebuilds from the wire


class PfsError(Exception):
    """Base of all user-facing errors: one clear line, no traceback.

    A subclass names its ``code`` (and what it changes of ``status``, ``exit_code`` and
    ``errno``) in its class line, and is then known by that code to ``from_code``."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    errno: ClassVar[int] = errno.EIO

    def __init_subclass__(cls, *, code: str, status: int | None = None,
                          exit_code: int | None = None, errno: int | None = None) -> None:
        super().__init_subclass__()
        cls.code = code
        cls.status = cls.status if status is None else status
        cls.exit_code = cls.exit_code if exit_code is None else exit_code
        cls.errno = cls.errno if errno is None else errno
        assert code not in ERRORS, f"two errors named {code}"
        ERRORS[code] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


ERRORS[PfsError.code] = PfsError


class InvalidArgument(PfsError, code="invalid_argument", status=400, exit_code=2,
                      errno=errno.EINVAL):
    """Malformed input: a bad name, reference, path, spec or option."""


class NameTooLong(InvalidArgument, code="name_too_long", errno=errno.ENAMETOOLONG):
    """A name or path longer than a file system takes (ENAMETOOLONG)."""


class TooLarge(InvalidArgument, code="too_large", status=413):
    """A request body or a text field larger than the daemon accepts."""


class NotFound(PfsError, code="not_found", status=404, exit_code=3, errno=errno.ENOENT):
    """An unknown repo, branch, commit, file, pipeline or job."""


class AlreadyExists(PfsError, code="already_exists", status=409, exit_code=4,
                    errno=errno.EEXIST):
    """A repo, branch, pipeline or file of that name is there already."""


class Conflict(PfsError, code="conflict", status=409, exit_code=5, errno=errno.EBUSY):
    """The request is well formed but the current state forbids it (e.g. commit not open)."""


class ReadOnly(PfsError, code="read_only", status=403, exit_code=6, errno=errno.EROFS):
    """A write to a finished commit or to a pipeline's output repo."""


class NotADirectory(PfsError, code="not_a_directory", status=409, exit_code=5,
                    errno=errno.ENOTDIR):
    """A path goes through a file as if it were a directory."""


class IsADirectory(PfsError, code="is_a_directory", status=409, exit_code=5,
                   errno=errno.EISDIR):
    """A file operation names a directory."""


class DirectoryNotEmpty(PfsError, code="directory_not_empty", status=409, exit_code=5,
                        errno=errno.ENOTEMPTY):
    """A directory to remove still has entries."""


class SourceError(PfsError, code="source_error", status=422, exit_code=7):
    """Reading the data to put failed: a missing local file or a URL that did not answer."""


class DaemonNotRunning(PfsError, code="daemon_not_running", status=503, exit_code=8):
    """No daemon serves this root: ``pfsmount up`` starts one."""


class DaemonRunning(PfsError, code="daemon_running", status=409, exit_code=9):
    """A daemon already holds this root."""


class Corrupt(PfsError, code="corrupt", exit_code=10):
    """Stored data failed a check: a missing object or a hash that does not match."""


class StoreFull(PfsError, code="store_full", status=507, exit_code=11, errno=errno.ENOSPC):
    """The disk under the store is full (ENOSPC, EDQUOT, or LMDB out of space): the store is
    to blame, not the data being put, and freeing space there fixes it. (HTTP 507 is
    Insufficient Storage.)"""

    @classmethod
    def under(cls, root: object) -> StoreFull:
        return cls(f"the store's disk is full: no space left on the device holding "
                   f"{root}; free space there (delete files or commits, then run "
                   "`pfsmount gc`) and try again")


class StorageUnavailable(PfsError, code="storage_unavailable", status=503, exit_code=12):
    """The object store (S3) cannot be reached, refuses the credentials, or has no such
    bucket: the data is not at fault, and fixing the server or the settings fixes it."""


class Internal(PfsError, code="internal", exit_code=70):
    """A bug: the daemon's log has the traceback."""


def from_code(code: str, message: str) -> PfsError:
    """Rebuild an error received over the wire; unknown codes become ``PfsError``."""
    return ERRORS.get(code, PfsError)(message)
