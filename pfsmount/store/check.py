"""Checking the store's own structures: tree pages, ``contents`` rows, ``chunks`` rows and the
bytes in packs (invariants 1, 2 and 3 of ``meta``), and dropping the rows reads cannot be
served from (``fsck --repair``).

``StoreCheck`` reads inside the caller's LMDB read transaction and writes nothing; each
problem is one line handed to the caller's ``error`` (which may cap how many it keeps),
naming the path a page or content was first reached by (the caller's ``where``). It knows
nothing of repos, commits or branches: ``pfs.fsck`` walks those and asks this for the trees
below them.

Work is shared: tree pages are content-addressed, so a page checked once is never read
again, and a thousand commits of a million-file repo cost the pages they differ by.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple, cast

import lmdb

from pfsmount.errors import Corrupt
from pfsmount.store.packs import runs
from pfsmount.store.rows import Location, checked_location, pack_name, parse_table
from pfsmount.store.tree import KIND_DIR, KIND_FILE, KIND_LINK, Inner, Leaf, Node

if TYPE_CHECKING:
    from pfsmount.store import Store

_LOC_SIZE = len(Location(0, 0, 0, 0, 0).encode())


class Summary(NamedTuple):
    """A checked page as its parent needs it: first and last name below it, total size."""

    first: str | None
    last: str | None
    size: int


class StoreCheck:
    """One check of the store's structures inside the read transaction ``txn``.

    ``walk`` each tree root first (it gathers the file contents the trees name), then
    ``check_contents``, ``check_chunks`` and optionally ``verify_chunks``. Afterwards
    ``bad_chunks`` and ``bad_contents`` hold what ``drop_damaged`` would remove.
    """

    def __init__(self, store: Store, txn: lmdb.Transaction, error: Callable[[str], None]
                 ) -> None:
        self.store = store
        self.txn = txn
        self.error = error
        self.db = store.meta.db
        self.files = 0  # file and symlink entries on the pages checked
        self.chunks = 0  # chunk index rows
        # Tree pages already checked (None: broken, already reported) and pages being checked.
        self.pages: dict[bytes, Summary | None] = {}
        self.in_progress: set[bytes] = set()
        # Referenced file contents: digest -> {size an entry claims: where it was claimed}.
        self.contents: dict[bytes, dict[int, str]] = {}
        # Referenced chunks -> where first referenced (for verify_data's messages).
        self.chunk_refs: dict[bytes, str] = {}
        self.bad_chunks: set[bytes] = set()
        self.bad_contents: set[bytes] = set()
        self.named: set[str] = set()  # files already named by a damage line

    def rows(self, name: str) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.txn.cursor(db=self.db[name]):
            yield bytes(key), bytes(value)

    # -- trees (invariant 3) -----------------------------------------------------------------

    def walk(self, root: bytes, where: str) -> Summary | None:
        """Check every page below ``root`` not checked before, children before parents."""
        trees = self.store.trees
        stack: list[tuple[bytes, str, Node | None]] = [(root, where, None)]
        while stack:
            digest, at, node = stack.pop()
            if node is not None:
                self.pages[digest] = self.summarize(node, at)
                self.in_progress.discard(digest)
                continue
            if digest in self.pages:
                continue
            if digest in self.in_progress:
                self.error(f"{at}: tree page {digest.hex()} contains itself")
                self.pages[digest] = None
                continue
            try:
                node = trees.verify_page(self.txn, digest)
            except Corrupt as e:
                self.error(f"{at}: {e}")
                self.pages[digest] = None
                continue
            self.in_progress.add(digest)
            stack.append((digest, at, node))
            for child, child_at in _children(node, at):
                if child not in self.pages:
                    stack.append((child, child_at, None))
        return self.pages.get(root)

    def summarize(self, node: Node, at: str) -> Summary | None:
        if isinstance(node, Leaf):
            return self.summarize_leaf(node, at)
        return self.summarize_inner(node, at)

    def summarize_leaf(self, node: Leaf, at: str) -> Summary | None:
        if len(node.names) != len(node.entries):
            self.error(f"{at}: a directory page has {len(node.names)} names for "
                       f"{len(node.entries)} entries")
            return None
        base = at.rstrip("/") + "/"
        previous: str | None = None
        for name, entry in zip(node.names, node.entries, strict=True):
            path = base + name
            if previous is not None and name <= previous:
                self.error(f"{path}: out of order after {previous!r} in its directory page")
            previous = name
            if not name or "/" in name or "\0" in name or name in (".", ".."):
                self.error(f"{at}: invalid entry name {name!r}")
            if entry.kind == KIND_FILE:
                self.files += 1
                if len(entry.ref) != 32:
                    self.error(f"{path}: file content name {entry.ref.hex()} is not a digest")
                else:
                    self.contents.setdefault(entry.ref, {}).setdefault(entry.size, path)
            elif entry.kind == KIND_DIR:
                child = self.pages.get(entry.ref)
                if child is not None and child.size != entry.size:
                    self.error(f"{path}: directory size {entry.size} but its entries hold "
                               f"{child.size} bytes")
            elif entry.kind == KIND_LINK:
                self.files += 1
            else:
                self.error(f"{path}: unknown entry kind {entry.kind}")
        size = sum(e.size for e in node.entries)
        if not node.names:
            return Summary(None, None, size)
        return Summary(node.names[0], node.names[-1], size)

    def summarize_inner(self, node: Inner, at: str) -> Summary | None:
        n = len(node.children)
        if not n or len(node.keys) != n or len(node.sizes) != n:
            self.error(f"{at}: a directory index page has {len(node.keys)} keys, {n} "
                       f"children and {len(node.sizes)} sizes")
            return None
        ok = True
        for i, (key, child, size) in enumerate(
            zip(node.keys, node.children, node.sizes, strict=True)
        ):
            below = self.pages.get(child)
            if below is None:
                ok = False
                continue
            if below.first is None:
                self.error(f"{at}: directory page {child.hex()} is empty but indexed")
                ok = False
                continue
            if below.first != key:
                self.error(f"{at}: index key {key!r} but page {child.hex()} starts at "
                           f"{below.first!r}")
            if i + 1 < n and below.last is not None and below.last >= node.keys[i + 1]:
                self.error(f"{at}: page {child.hex()} holds {below.last!r}, which belongs "
                           f"after index key {node.keys[i + 1]!r}")
            if below.size != size:
                self.error(f"{at}: index says page {child.hex()} holds {size} bytes, "
                           f"its entries hold {below.size}")
        if any(a >= b for a, b in zip(node.keys, node.keys[1:], strict=False)):
            self.error(f"{at}: directory index keys are out of order")
        last = self.pages.get(node.children[-1])
        if not ok or last is None:
            return Summary(node.keys[0], None, sum(node.sizes))
        return Summary(node.keys[0], last.last, sum(node.sizes))

    # -- contents and chunks (invariants 1, 2 and 3) -----------------------------------------

    def check_contents(self) -> None:
        chunks_db = self.db["chunks"]
        unseen = set(self.contents)
        for key, raw in self.rows("contents"):
            claims = self.contents.get(key)
            label = f"content {key.hex()}"
            if claims:
                label += f" (of {next(iter(claims.values()))})"
            unseen.discard(key)
            if len(key) != 32:
                self.error(f"{label}: malformed contents key")
                continue
            try:  # the checks every read makes (increasing ends, its name)
                table = parse_table(key, raw, label)
            except Corrupt as e:
                self.error(str(e))
                self.bad_contents.add(key)
                continue
            start = 0
            for digest, end in zip(table.digests, table.ends, strict=True):
                loc = self.txn.get(digest, db=chunks_db)
                if loc is None:
                    self.error(f"{label}: chunk {digest.hex()} is not in the chunk index")
                    self.bad_chunks.add(digest)
                    self.bad_contents.add(key)
                elif len(loc) == _LOC_SIZE and (held := Location.decode(bytes(loc)).raw) != (
                        end - start):
                    self.error(f"{label}: chunk {digest.hex()} holds {held} bytes, its table "
                               f"says {end - start}")
                    self.bad_contents.add(key)
                start = end
            if claims is None:
                continue
            for size, path in claims.items():
                if size != table.size:
                    self.error(f"{path}: file size {size} but its content holds {table.size} "
                               "bytes")
                    self.bad_contents.add(key)
            first = next(iter(claims.values()))
            for digest in table.digests:
                self.chunk_refs.setdefault(digest, first)
        for digest in sorted(unseen):
            path = next(iter(self.contents[digest].values()))
            self.error(f"{path}: file content {digest.hex()} is missing")
            self.bad_contents.add(digest)

    def damaged(self, digest: bytes, why: str, alone: bool = True) -> None:
        """A chunk reads cannot be served from: one line per file that uses it (the first
        damage found in it), or, for a chunk no file uses, ``why`` itself when ``alone``."""
        self.bad_chunks.add(digest)
        path = self.chunk_refs.get(digest)
        if path is None:
            if alone:
                self.error(why)
        elif path not in self.named:
            self.named.add(path)
            self.error(f"{path}: {why}")

    def check_chunks(self) -> None:
        packs = self.store.packs
        sizes: dict[int, int | None] = {}
        missing: dict[int, int] = {}
        for key, raw in self.rows("chunks"):
            self.chunks += 1
            label = f"chunk {key.hex()}"
            if len(key) != 32:
                self.error(f"{label}: malformed chunk index key")
                continue
            try:
                loc = checked_location(key, raw)
            except Corrupt as e:
                self.damaged(key, str(e))
                continue
            if loc.pack not in sizes:
                sizes[loc.pack] = packs.pack_size(loc.pack)
            size = sizes[loc.pack]
            if size is None:
                missing[loc.pack] = missing.get(loc.pack, 0) + 1
                self.damaged(key, f"{label} is in pack {pack_name(loc.pack)}, which is missing",
                             alone=False)
            elif loc.offset + loc.stored > size:
                why = (f"{label}: bytes {loc.offset}..{loc.offset + loc.stored} lie outside "
                       f"pack {pack_name(loc.pack)} of {size} bytes")
                self.damaged(key, why)
        for pack, count in sorted(missing.items()):
            self.error(f"pack {pack_name(pack)} is missing; {count} chunks point into it")

    def verify_chunks(self) -> None:
        """Read every referenced chunk from its pack and check its name: chunks that lie
        back to back are read with one call, by a few threads (hashing releases the GIL)."""
        chunks_db = self.db["chunks"]
        todo: list[tuple[Location, bytes]] = []
        for digest in self.chunk_refs:
            raw = self.txn.get(digest, db=chunks_db)
            if raw is not None and digest not in self.bad_chunks:
                todo.append((checked_location(digest, bytes(raw)), digest))
        todo.sort()
        with ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="pfsmount-fsck") as pool:
            for bad in pool.map(self.verify_run, runs(todo)):
                for digest, err in bad:
                    self.damaged(digest, str(err))

    def verify_run(self, run: list[tuple[Location, bytes]]) -> list[tuple[bytes, Corrupt]]:
        """The damaged chunks of one run (each chunk alone once the run fails)."""
        packs = self.store.packs
        try:
            packs.read_run(run)
            return []
        except Corrupt:
            pass
        bad: list[tuple[bytes, Corrupt]] = []
        for item in run:
            try:
                packs.read_run([item])
            except Corrupt as e:
                bad.append((item[1], e))
        return bad




def drop_damaged(store: Store, txn: lmdb.Transaction, chunks: set[bytes], contents: set[bytes]
                 ) -> set[bytes]:
    """Delete the damaged chunk rows, the damaged ``contents`` rows and every ``contents``
    row that uses a damaged chunk, in the caller's write transaction; returns the contents
    no file may name any more."""
    db = store.meta.db
    for digest in chunks:
        txn.delete(digest, db=db["chunks"])
    dropped = set(contents)
    rows = cast(Iterator[tuple[bytes, bytes]], txn.cursor(db=db["contents"]))
    for key, raw in rows:
        try:
            if chunks.isdisjoint(parse_table(key, raw).digests):
                continue
        except Corrupt:
            pass
        dropped.add(bytes(key))
    for key in dropped:
        txn.delete(key, db=db["contents"])
    return dropped


def _children(node: Node, at: str) -> Iterator[tuple[bytes, str]]:
    """The pages a page points at: directory roots of its entries, or its index children."""
    if isinstance(node, Inner):
        for child in node.children:
            yield child, at
        return
    base = at.rstrip("/") + "/"
    for name, entry in zip(node.names, node.entries, strict=False):
        if entry.kind == KIND_DIR:
            yield entry.ref, base + name
