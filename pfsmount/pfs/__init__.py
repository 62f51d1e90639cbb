"""The versioning model: repos, branches, commits, files and provenance over the store.

``Pfs`` (``pfs.system``) opens a store and exposes ``repos``, ``commits`` and ``files``; every
method takes and returns plain values (names, reference strings, model structs) so that the
API layer maps them one to one. Nothing here knows about HTTP, FUSE or pipelines' internals.

``Pfs`` and ``Event`` load on first use: the CLI and the client import this package for the
model structs alone, and should not pay for LMDB, zstd and the store to decode a reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pfsmount.pfs.model import Branch, Commit, Counts, FileDiff, FileInfo, Repo

if TYPE_CHECKING:
    from pfsmount.pfs.events import Event
    from pfsmount.pfs.system import Pfs

__all__ = [
    "Branch",
    "Commit",
    "Counts",
    "Event",
    "FileDiff",
    "FileInfo",
    "Pfs",
    "Repo",
]


def __getattr__(name: str) -> Any:
    if name == "Pfs":
        from pfsmount.pfs.system import Pfs

        return Pfs
    if name == "Event":
        from pfsmount.pfs.events import Event

        return Event
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
