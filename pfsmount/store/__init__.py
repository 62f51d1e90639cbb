"""Content-addressed storage: chunks in packs, LMDB metadata, structure-sharing trees.

``Store`` opens the pieces of one root directory together. The layers above see files as
content digests and directories as tree pages; nothing here knows about repos or commits.
"""

from __future__ import annotations

from pathlib import Path

from pfsmount.store.content import Content, ContentStore, WriteBatch
from pfsmount.store.meta import Meta
from pfsmount.store.objects import LocalObjectStore, ObjectStore
from pfsmount.store.packs import PackStore
from pfsmount.store.readers import Readers
from pfsmount.store.tree import KIND_DIR, KIND_FILE, KIND_LINK, MKDIR, Entry, Trees

__all__ = [
    "KIND_DIR",
    "KIND_FILE",
    "KIND_LINK",
    "MKDIR",
    "Content",
    "Entry",
    "Store",
    "WriteBatch",
]


class Store:
    """The metadata environment, pack store, contents and trees under one root.

    Packs live in ``objects`` (see ``objects.open_objects`` to pick one by URL), by default
    the directory ``root/packs``; staging and metadata are always local under ``root``.
    """

    def __init__(self, root: Path, objects: ObjectStore | None = None) -> None:
        self.root = root
        self.meta = Meta(root / "meta")
        self.objects: ObjectStore = objects or LocalObjectStore(root / "packs")
        self.packs = PackStore(self.meta, self.objects, root / "staging")
        self.contents = ContentStore(self.meta, self.packs)
        self.trees = Trees(self.meta)
        self.readers = Readers()

    def close(self) -> None:
        self.readers.close()
        self.packs.close()
        self.objects.close()
        self.meta.close()
