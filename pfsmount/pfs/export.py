"""Writing a commit's files to a local directory: ``file get -o``, and datum inputs copied
for a runner when there is no mount.

Owns the one safe way to materialise repo content on this machine. Below the destination the
caller named, nothing is ever followed: each directory is opened relative to its parent's fd
with ``O_NOFOLLOW | O_DIRECTORY`` (a symlink or a ``..`` planted in the target, or stored in
the repo, cannot lead a write outside it), and each file is written to a temporary of an
unpredictable name created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and renamed into place
within the same directory fd, so that nobody can plant the temporary either. An existing
file (or link) where a file goes is replaced, each file whole or not at all; anything else
in the way is a one-line error naming the path. Must not know about HTTP or the CLI.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pfsmount.errors import InvalidArgument, IsADirectory, NotADirectory, PfsError
from pfsmount.pfs.model import Counts, FileInfo
from pfsmount.pfs.refs import parse_ref

if TYPE_CHECKING:
    from pfsmount.pfs.system import Pfs

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def export(pfs: Pfs, ref: str, dest: Path, recursive: bool = True, *,
           path: str | None = None, readable: bool = False,
           between: Callable[[], None] | None = None) -> Counts:
    """Write a file, or every file below a directory, to local ``dest`` (made as needed).

    A directory with ``recursive`` false is refused before anything is written. ``dest``
    itself is the caller's own path and is resolved as given; everything below it is not.
    Files keep their mode; ``readable`` adds read access for everyone (a copy for a
    process of another uid). ``between`` is called before each file of a directory (it
    raises to end the copy there: a stopped job's egress).
    """
    info = pfs.files.inspect(ref, path)
    if info.type == "dir" and not recursive:
        raise InvalidArgument(f"{info.path} is a directory (use -r)")
    pinned = f"{parse_ref(ref).repo}@{info.commit}"  # one snapshot, even if the branch moves
    counts = Counts()
    where = dest
    try:
        if info.type != "dir":
            dest.parent.mkdir(parents=True, exist_ok=True)
            with _Beneath(dest.parent) as top:
                _place(pfs, pinned, info, top.fd, dest.name, readable)
            if info.type == "file":
                counts.files, counts.bytes = 1, info.size
            return counts
        dest.mkdir(parents=True, exist_ok=True)
        base = info.path.rstrip("/")
        with _Beneath(dest) as top:
            for item in pfs.files.walk(pinned, info.path, dirs=True):
                rel = item.path[len(base):].strip("/")
                if not rel:
                    continue
                parts = rel.split("/")
                where = dest.joinpath(*parts)
                if item.type == "dir":  # made here too, so that empty directories come back
                    top.dir(parts)
                    continue
                if between is not None:
                    between()
                _place(pfs, pinned, item, top.dir(parts[:-1]), parts[-1], readable)
                if item.type == "file":
                    counts.files += 1
                    counts.bytes += item.size
    except OSError as e:
        raise _error(e, where) from None
    return counts


def _error(e: OSError, where: Path) -> PfsError:
    """A local failure as one line naming the path the caller asked for."""
    if e.errno == errno.ELOOP:
        return NotADirectory(f"cannot write {where}: a symbolic link is in the way "
                             "(links below the destination are never followed)")
    cls = {errno.EISDIR: IsADirectory, errno.ENOTDIR: NotADirectory}.get(e.errno or 0, PfsError)
    return cls(f"cannot write {where}: {e.strerror}")


class _Beneath:
    """Directory fds below one top directory, opened one component at a time without
    following links; the chain of the last directory used stays open (a walk visits each
    directory's files together)."""

    def __init__(self, top: Path) -> None:
        self.fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.chain: list[tuple[str, int]] = []

    def __enter__(self) -> _Beneath:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, fd in self.chain:
            os.close(fd)
        os.close(self.fd)

    def dir(self, parts: list[str]) -> int:
        """The fd of directory ``parts`` below the top, made as needed (owned here)."""
        keep = 0
        while (keep < len(self.chain) and keep < len(parts)
               and self.chain[keep][0] == parts[keep]):
            keep += 1
        for _, fd in self.chain[keep:]:
            os.close(fd)
        del self.chain[keep:]
        for name in parts[keep:]:
            parent = self.chain[-1][1] if self.chain else self.fd
            self.chain.append((name, _subdir(parent, name)))
        return self.chain[-1][1] if self.chain else self.fd


def _check_name(name: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"refusing to write a file named {name!r}")


def _subdir(parent: int, name: str) -> int:
    """Open (making it if missing) directory ``name`` in ``parent``, never through a link."""
    _check_name(name)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        _refuse_link(parent, name)
        raise
    with contextlib.suppress(FileExistsError):  # made meanwhile: opened (or refused) below
        os.mkdir(name, dir_fd=parent)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except NotADirectoryError:
        _refuse_link(parent, name)
        raise


def _refuse_link(parent: int, name: str) -> None:
    """Raise ELOOP if ``name`` is a symlink (which ``O_NOFOLLOW | O_DIRECTORY`` reports as
    ENOTDIR), so the error says why."""
    if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))


def _place(pfs: Pfs, pinned: str, item: FileInfo, parent: int, name: str,
           readable: bool) -> None:
    """Write one file or link as ``name`` in directory fd ``parent``."""
    _check_name(name)
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    if item.type == "symlink":
        if st is not None:
            os.unlink(name, dir_fd=parent)
        os.symlink(item.target or "", name, dir_fd=parent)
        return
    _write_file(pfs, pinned, item, parent, name, (item.mode & 0o777) | (0o444 * readable))


def _write_file(pfs: Pfs, pinned: str, item: FileInfo, parent: int, name: str,
                mode: int) -> None:
    """Write a file to a fresh temporary beside ``name`` and rename it into place: never
    half a file, and no temporary left behind when that fails."""
    commit, entry = pfs.files.open(pinned, item.path)
    tmp = f".pfsmount-{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=parent)
    try:
        try:
            pfs.files.copy_to(entry, fd, pfs.files.describe(commit, item.path))
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=parent)
        raise
