"""``Pfs``: one store opened for versioning, with its repos, commits, files and journal.

The layers above hold one ``Pfs`` per daemon; every operation they offer is a method of one
of its parts. Those parts are behind the journal barrier: an operation that names a repo,
branch or commit first applies the files the mount staged (``barrier``), so that whoever
calls it (an API request, the scheduler, a test in-process) sees a file as soon as it was
closed. ``direct`` holds the same parts without the barrier, for the mount (it shows its
staged files itself) and the journal (which applies them). Nothing here knows about HTTP,
FUSE or pipelines' internals.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import lmdb

from pfsmount.errors import StoreFull
from pfsmount.pfs.commits import Commits
from pfsmount.pfs.events import Events
from pfsmount.pfs.files import Files
from pfsmount.pfs.journal import Journal
from pfsmount.pfs.records import Records
from pfsmount.pfs.repos import Repos
from pfsmount.pfs.state import State
from pfsmount.store import Entry, Store
from pfsmount.store.objects import ObjectStore, open_objects

log = logging.getLogger("pfsmount.pfs")
_P = TypeVar("_P")

# The operations that name a repo, branch or commit, and so see the staged files. The others
# take what a caller already holds (an entry to read, a transaction, a batch): they need no
# barrier, and must not wait for a flush (their caller may be inside a write transaction).
BARRIERED = {
    Repos: frozenset({"create", "list", "inspect", "delete", "create_branch",
                      "list_branches", "inspect_branch", "delete_branch"}),
    Commits: frozenset({"start", "finish", "inspect", "list", "delete", "squash", "wait"}),
    Files: frozenset({"write", "write_snapshot", "put", "inspect", "open", "list", "walk",
                      "glob", "diff", "delete", "copy", "apply"}),
}


class Parts(NamedTuple):
    """The model's parts as they are, beneath the barrier (``Pfs.direct``)."""

    repos: Repos
    commits: Commits
    files: Files


class Pfs:
    def __init__(self, root: Path, objects: ObjectStore | None = None) -> None:
        self.store = Store(root, objects)
        self.events = Events()
        self.records = Records(self.store.meta)
        repos = Repos(self.store, self.records, self.events)
        commits = Commits(self.store, self.records, self.events)
        files = Files(self.store, self.records, commits, self.events)
        self.journal = Journal(root / "journal", files)
        self.direct = Parts(repos, commits, files)
        self.repos = _behind(repos, self.barrier)
        self.commits = _behind(commits, self.barrier)
        self.files = _behind(files, self.barrier)
        # Callables naming entries that are live though no commit holds them (the layers
        # above register theirs); ``garbage.collect`` keeps what they reach.
        self.gc_roots: list[Callable[[lmdb.Transaction], Iterable[Entry]]] = []
        self.state = State(self.store, self.records, files.ingest_tree, self.gc_roots)

    @classmethod
    def open(cls, root: Path, storage: str) -> Pfs:
        """The store at ``root`` with its packs in the ``ObjectStore`` the URL ``storage``
        names (``file:///...``): how the daemon opens one from its config."""
        return cls(root, open_objects(storage))

    def barrier(self) -> None:
        """Apply the files the mount staged, so that what follows sees them: a check under
        one lock when nothing is staged. A flush that finds the disk full leaves them staged
        (still shown by the mount) and lets the caller go on: reads and deletes need no
        space. The thread applying them (a listener of their events) passes straight on."""
        journal = self.journal
        if journal.pending() and not journal.applying_here():
            try:
                journal.flush()
            except StoreFull as e:
                log.warning("staged files wait: %s", e)

    def close(self) -> None:
        self.journal.close()
        self.store.close()


def _behind(part: _P, barrier: Callable[[], None]) -> _P:
    """``part`` with each of its ``BARRIERED`` operations calling ``barrier`` first (a
    generator's, when it is first advanced: the thread that streams it pays, not the one
    that made it); every other attribute is the part's own."""
    face = _Face(part)
    for name in dir(type(part)):  # bound once: a lookup costs what it does on the part
        if not name.startswith("_") and callable(getattr(type(part), name)):
            setattr(face, name, getattr(part, name))
    for name in BARRIERED[type(part)]:
        method = getattr(part, name)
        wrap = _stream_after if inspect.isgeneratorfunction(method) else _call_after
        setattr(face, name, wrap(barrier, method))
    return cast(_P, face)


class _Face:
    def __init__(self, part: object) -> None:
        self._part = part

    def __getattr__(self, name: str) -> Any:  # the part's data attributes
        return getattr(self._part, name)


def _call_after(barrier: Callable[[], None], method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        barrier()
        return method(*args, **kwargs)

    return call


def _stream_after(barrier: Callable[[], None],
                  method: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    @functools.wraps(method)
    def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
        barrier()
        yield from method(*args, **kwargs)

    return stream
