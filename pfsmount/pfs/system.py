"""``Pfs``: one store opened for versioning, with its repos, commits, files and journal.

The layers above hold one ``Pfs`` per daemon; every operation they offer is a method of one
of its parts. Nothing here knows about HTTP, FUSE or pipelines' internals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import lmdb

from pfsmount.pfs.commits import Commits
from pfsmount.pfs.events import Events
from pfsmount.pfs.files import Files
from pfsmount.pfs.journal import Journal
from pfsmount.pfs.records import Records
from pfsmount.pfs.repos import Repos
from pfsmount.pfs.state import State
from pfsmount.store import Entry, Store
from pfsmount.store.objects import ObjectStore, open_objects


class Pfs:
    def __init__(self, root: Path, objects: ObjectStore | None = None) -> None:
        self.store = Store(root, objects)
        self.events = Events()
        self.records = Records(self.store.meta)
        self.repos = Repos(self.store, self.records, self.events)
        self.commits = Commits(self.store, self.records, self.events)
        self.files = Files(self.store, self.records, self.commits, self.events)
        self.journal = Journal(root / "journal", self.files)
        # Callables naming entries that are live though no commit holds them (the layers
        # above register theirs); ``garbage.collect`` keeps what they reach.
        self.gc_roots: list[Callable[[lmdb.Transaction], Iterable[Entry]]] = []
        self.state = State(self.store, self.records, self.files.ingest_tree, self.gc_roots)

    @classmethod
    def open(cls, root: Path, storage: str) -> Pfs:
        """The store at ``root`` with its packs in the ``ObjectStore`` the URL ``storage``
        names (``file:///...``): how the daemon opens one from its config."""
        return cls(root, open_objects(storage))

    def close(self) -> None:
        self.journal.close()
        self.store.close()
