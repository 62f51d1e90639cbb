"""Directory trees that share structure between commits.

A directory is a persistent B-tree of pages keyed by entry name: ``Leaf`` pages hold sorted
names with their ``Entry``; ``Inner`` pages hold each child's first name, node hash and byte
size. Pages are immutable rows of the ``nodes`` sub-database named by BLAKE3 of their
encoding, so a change copies only the pages on its path (O(depth x log n)) and every commit
shares the rest. A directory of a million names costs a few pages to change, to list from
any point, or to diff against an ancestor, never a full read. Nothing here knows about
repos, commits or how paths are spelled by users: paths are ``a/b/c`` strings.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Final, NamedTuple, TypeVar

import lmdb
import msgspec

from pfsmount.errors import AlreadyExists, Corrupt, NotADirectory, NotFound
from pfsmount.store import chunking
from pfsmount.store.meta import Meta

KIND_FILE: Final = 0
KIND_DIR: Final = 1
KIND_LINK: Final = 2

_T = TypeVar("_T")

MAX_FANOUT = 512  # a page splits past this many entries ...
SPLIT_TO = 256  # ... into pages of about this many
# Decoded pages kept: bounded by their encoded bytes, not their count, since a full page of
# long names decodes to over 100 KiB of objects and every change to a big directory makes a
# new one (8,192 such pages held 1 GB under load). 8 MiB of encoding, about 40 MiB decoded,
# holds a 100,000-name directory (about 6 MiB encoded).
DEPTH_MAX: Final = 256  # directories in a path; deeper is refused on write, damage on read
PAGE_LEVELS_MAX: Final = 32  # pages of one directory's B-tree (2**32 entries need 4 levels)
CACHE_BYTES = 8 << 20
CACHE_PAGES = 8192


class Entry(msgspec.Struct, array_like=True, frozen=True):
    """One name in a directory.

    ``ref`` is the content digest of a file, the root page of a directory, or the target of a
    symlink. ``size`` of a directory is the total size of the files below it.
    """

    kind: int
    size: int
    mode: int
    mtime: int
    ref: bytes

    @property
    def is_dir(self) -> bool:
        return self.kind == KIND_DIR

    def same_content(self, other: Entry) -> bool:
        return self.kind == other.kind and self.ref == other.ref and self.mode == other.mode


class Leaf(msgspec.Struct, array_like=True, frozen=True, tag=0):
    names: list[str]
    entries: list[Entry]


class Inner(msgspec.Struct, array_like=True, frozen=True, tag=1):
    keys: list[str]
    children: list[bytes]
    sizes: list[int]


Node = Leaf | Inner


class Ref(NamedTuple):
    """A page as its parent sees it: first name, hash, total size below."""

    key: str
    node: bytes
    size: int


class _MkDir:
    """Change marker: make sure a directory exists at this path (``mkdir -p``)."""

    def __repr__(self) -> str:
        return "MKDIR"


MKDIR: Final = _MkDir()


class Retouch(NamedTuple):
    """Change marker: new mode and/or mtime for whatever the path holds when applied."""

    mode: int | None = None
    mtime: int | None = None


Change = Entry | None | _MkDir | Retouch  # None removes the name (and all below it)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Node)


class Trees:
    """Reads and writes directory pages; decoded pages are cached (they never change)."""

    def __init__(self, meta: Meta) -> None:
        self.meta = meta
        self.db = meta.db["nodes"]
        self._cache: OrderedDict[bytes, tuple[Node, int]] = OrderedDict()  # page, its bytes
        self._cached = 0  # encoded bytes of the cached pages
        self._lock = threading.Lock()
        with meta.write() as txn:
            self.empty = self._put(txn, Leaf([], []))

    # -- pages -------------------------------------------------------------------------------

    def node(self, txn: lmdb.Transaction, digest: bytes) -> Node:
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None:
                self._cache.move_to_end(digest)
                return cached[0]
        raw = txn.get(digest, db=self.db)
        if raw is None:
            raise Corrupt(f"tree page {digest.hex()} is missing")
        node: Node = _decoder.decode(raw)
        with self._lock:
            if digest not in self._cache:  # another thread may have read it meanwhile
                self._cache[digest] = (node, len(raw))
                self._cached += len(raw)
                while self._cached > CACHE_BYTES or len(self._cache) > CACHE_PAGES:
                    self._cached -= self._cache.popitem(last=False)[1][1]
        return node

    def _put(self, txn: lmdb.Transaction, node: Node) -> bytes:
        raw = _encoder.encode(node)
        digest = chunking.digest(raw)
        txn.put(digest, raw, db=self.db, overwrite=False)
        return digest

    def reachable(self, txn: lmdb.Transaction, roots: list[bytes], seen: set[bytes]
                  ) -> Iterator[Entry]:
        """Every file and symlink entry below the directory pages ``roots``, adding each page
        visited to ``seen`` (pages in it already are skipped: commits share most of theirs).
        Pages are decoded straight from the database, leaving the page cache alone."""
        stack = [r for r in roots if r not in seen]
        while stack:
            digest = stack.pop()
            if digest in seen:
                continue
            seen.add(digest)
            raw = txn.get(digest, db=self.db)
            if raw is None:
                raise Corrupt(f"tree page {digest.hex()} is missing")
            node: Node = _decoder.decode(raw)
            if isinstance(node, Inner):
                stack.extend(c for c in node.children if c not in seen)
                continue
            for entry in node.entries:
                if entry.kind == KIND_DIR:
                    if entry.ref not in seen:
                        stack.append(entry.ref)
                else:
                    yield entry

    def verify_page(self, txn: lmdb.Transaction, digest: bytes) -> Node:
        """Decode a page straight from the database and check its name (for fsck)."""
        raw = txn.get(digest, db=self.db)
        if raw is None:
            raise Corrupt(f"tree page {digest.hex()} is missing")
        if chunking.digest(raw) != digest:
            raise Corrupt(f"tree page {digest.hex()} does not match its content")
        try:
            node: Node = _decoder.decode(raw)
            return node
        except msgspec.DecodeError as e:
            raise Corrupt(f"tree page {digest.hex()} does not decode: {e}") from None

    def size(self, txn: lmdb.Transaction, digest: bytes) -> int:
        node = self.node(txn, digest)
        if isinstance(node, Leaf):
            return sum(e.size for e in node.entries)
        return sum(node.sizes)

    # -- reading -----------------------------------------------------------------------------

    def find(self, txn: lmdb.Transaction, directory: bytes, name: str) -> Entry | None:
        """The entry called ``name`` in one directory."""
        node = self.node(txn, directory)
        levels = 0
        while isinstance(node, Inner):
            levels = _deeper(levels, directory)
            i = max(bisect.bisect_right(node.keys, name) - 1, 0)
            node = self.node(txn, node.children[i])
        i = bisect.bisect_left(node.names, name)
        if i < len(node.names) and node.names[i] == name:
            return node.entries[i]
        return None

    def lookup(self, txn: lmdb.Transaction, root: bytes, path: str) -> Entry | None:
        """The entry at ``path`` below ``root``; ``""`` is the root directory itself."""
        entry = Entry(KIND_DIR, 0, 0o755, 0, root)
        for name in path.split("/") if path else ():
            if entry.kind != KIND_DIR:
                return None
            found = self.find(txn, entry.ref, name)
            if found is None:
                return None
            entry = found
        if entry.ref == root and not path:
            entry = Entry(KIND_DIR, self.size(txn, root), 0o755, 0, root)
        return entry

    def listdir(
        self, txn: lmdb.Transaction, directory: bytes, after: str | None = None
    ) -> Iterator[tuple[str, Entry]]:
        """The entries of one directory in name order, starting after ``after``."""
        stack = [(directory, 0)]
        while stack:
            digest, levels = stack.pop()
            node = self.node(txn, digest)
            if isinstance(node, Leaf):
                start = 0 if after is None else bisect.bisect_right(node.names, after)
                for i in range(start, len(node.names)):
                    yield node.names[i], node.entries[i]
            else:
                below = _deeper(levels, directory)
                start = 0
                if after is not None:
                    start = max(bisect.bisect_right(node.keys, after) - 1, 0)
                stack.extend((child, below) for child in reversed(node.children[start:]))

    def walk(
        self, txn: lmdb.Transaction, directory: bytes, prefix: str = "", dirs: bool = False
    ) -> Iterator[tuple[str, Entry]]:
        """Every entry below ``directory``, depth first in name order, as ``prefix/name``."""
        _check_depth(prefix, directory)
        for name, entry in self.listdir(txn, directory):
            path = f"{prefix}{name}"
            if entry.kind == KIND_DIR:
                if dirs:
                    yield path, entry
                yield from self.walk(txn, entry.ref, path + "/", dirs)
            else:
                yield path, entry

    def count(self, txn: lmdb.Transaction, directory: bytes) -> int:
        """How many entries one directory holds (reads its pages, not its subdirectories)."""
        total, stack = 0, [(directory, 0)]
        while stack:
            digest, levels = stack.pop()
            node = self.node(txn, digest)
            if isinstance(node, Leaf):
                total += len(node.names)
            else:
                below = _deeper(levels, directory)
                stack.extend((child, below) for child in node.children)
        return total

    # -- writing -----------------------------------------------------------------------------

    def apply(
        self,
        txn: lmdb.Transaction,
        root: bytes,
        changes: Mapping[str, Change],
        mtime: int,
        _prefix: str = "",
    ) -> tuple[bytes, int]:
        """Apply path changes below ``root``; returns the new root page and its size.

        Missing parent directories are created. A parent that is not a directory raises
        ``NotADirectory``; ``MKDIR`` over a file raises ``AlreadyExists``.
        """
        direct: dict[str, Change] = {}
        nested: dict[str, dict[str, Change]] = {}
        for path, change in changes.items():
            head, _, rest = path.partition("/")
            if rest:
                nested.setdefault(head, {})[rest] = change
            else:
                direct[head] = change
        ops: dict[str, Entry | None] = {}
        for name, change in direct.items():
            if isinstance(change, _MkDir):
                current = self.find(txn, root, name)
                if current is None:
                    if name not in nested:
                        ops[name] = Entry(KIND_DIR, 0, 0o755, mtime, self.empty)
                elif current.kind != KIND_DIR:
                    raise AlreadyExists(f"{_prefix}{name} exists and is not a directory")
            elif isinstance(change, Retouch):
                current = self.find(txn, root, name)
                if current is None:
                    raise NotFound(f"{_prefix}{name} not found")
                ops[name] = Entry(current.kind, current.size,
                                  current.mode if change.mode is None else change.mode,
                                  current.mtime if change.mtime is None else change.mtime,
                                  current.ref)
            else:
                ops[name] = change
        for name, sub in nested.items():
            current = ops[name] if name in ops else self.find(txn, root, name)
            if current is None and all(c is None for c in sub.values()):
                continue  # deleting below a missing directory must not create it
            if current is not None and current.kind != KIND_DIR:
                raise NotADirectory(f"{_prefix}{name} is not a directory")
            base = current.ref if current is not None else self.empty
            mode = current.mode if current is not None else 0o755
            child, size = self.apply(txn, base, sub, mtime, f"{_prefix}{name}/")
            ops[name] = Entry(KIND_DIR, size, mode, mtime, child)
        if not ops:
            return root, self.size(txn, root)
        refs = self._apply_node(txn, root, sorted(ops.items()))
        while len(refs) > 1:
            refs = self._pack_inner(txn, refs)
        if not refs:
            return self.empty, 0
        return refs[0].node, refs[0].size

    def _apply_node(
        self, txn: lmdb.Transaction, digest: bytes, ops: list[tuple[str, Entry | None]]
    ) -> list[Ref]:
        node = self.node(txn, digest)
        if isinstance(node, Leaf):
            merged = dict(zip(node.names, node.entries, strict=True))
            for name, entry in ops:
                if entry is None:
                    merged.pop(name, None)
                else:
                    merged[name] = entry
            names = sorted(merged)
            return [
                Ref(part[0], self._put(txn, Leaf(part, [merged[n] for n in part])),
                    sum(merged[n].size for n in part))
                for part in _split(names)
            ]
        groups: dict[int, list[tuple[str, Entry | None]]] = {}
        for op in ops:
            i = max(bisect.bisect_right(node.keys, op[0]) - 1, 0)
            groups.setdefault(i, []).append(op)
        refs: list[Ref] = []
        for i, child in enumerate(node.children):
            if i in groups:
                refs.extend(self._apply_node(txn, child, groups[i]))
            else:
                refs.append(Ref(node.keys[i], child, node.sizes[i]))
        return self._pack_inner(txn, refs) if len(refs) > 1 else refs

    def _pack_inner(self, txn: lmdb.Transaction, refs: list[Ref]) -> list[Ref]:
        out = []
        for part in _split(refs):
            inner = Inner([r.key for r in part], [r.node for r in part], [r.size for r in part])
            out.append(Ref(part[0].key, self._put(txn, inner), sum(inner.sizes)))
        return out

    # -- comparing ---------------------------------------------------------------------------

    def diff(
        self, txn: lmdb.Transaction, old: bytes, new: bytes, prefix: str = ""
    ) -> Iterator[tuple[str, Entry | None, Entry | None]]:
        """Files and links that differ between two directories: ``(path, old, new)``.

        Pages with the same hash are skipped whole, so diffing a commit against its parent
        reads only the pages the commit rewrote.
        """
        if old == new:
            return
        _check_depth(prefix, new)
        a: list[_Item] = [_Item("", old, None)]
        b: list[_Item] = [_Item("", new, None)]
        seen: tuple[set[bytes], set[bytes]] = (set(), set())  # pages expanded, per side
        while a and b:
            x, y = a[-1], b[-1]
            if x.entry is None and y.entry is None and x.node == y.node:
                a.pop()
                b.pop()
            elif x.entry is None and x.key <= y.key:
                self._expand(txn, a, seen[0])
            elif y.entry is None and y.key <= x.key:
                self._expand(txn, b, seen[1])
            elif x.key < y.key:
                a.pop()
                yield from self._one_side(txn, prefix + x.key, x.entry, old_side=True)
            elif y.key < x.key:
                b.pop()
                yield from self._one_side(txn, prefix + y.key, y.entry, old_side=False)
            else:
                a.pop()
                b.pop()
                assert x.entry is not None and y.entry is not None
                yield from self._pair(txn, prefix + x.key, x.entry, y.entry)
        for side, rest, pages in ((True, a, seen[0]), (False, b, seen[1])):
            while rest:
                item = rest[-1]
                if item.entry is None:
                    self._expand(txn, rest, pages)
                else:
                    rest.pop()
                    yield from self._one_side(txn, prefix + item.key, item.entry, side)

    def _expand(self, txn: lmdb.Transaction, stack: list[_Item], seen: set[bytes]) -> None:
        """Replace the page on top of ``stack`` by its items. A page of one directory appears
        once in its B-tree, so one met again means the tree is damaged (a cycle)."""
        digest = stack.pop().node
        if digest in seen:
            raise Corrupt(f"tree page {digest.hex()} refers back to itself")
        seen.add(digest)
        node = self.node(txn, digest)
        if isinstance(node, Leaf):
            items = [_Item(n, b"", e) for n, e in zip(node.names, node.entries, strict=True)]
        else:
            items = [_Item(k, c, None) for k, c in zip(node.keys, node.children, strict=True)]
        stack.extend(reversed(items))

    def _one_side(
        self, txn: lmdb.Transaction, path: str, entry: Entry | None, old_side: bool
    ) -> Iterator[tuple[str, Entry | None, Entry | None]]:
        assert entry is not None
        items = (
            self.walk(txn, entry.ref, path + "/") if entry.kind == KIND_DIR else [(path, entry)]
        )
        for p, e in items:
            yield (p, e, None) if old_side else (p, None, e)

    def _pair(
        self, txn: lmdb.Transaction, path: str, old: Entry, new: Entry
    ) -> Iterator[tuple[str, Entry | None, Entry | None]]:
        if old.kind == KIND_DIR and new.kind == KIND_DIR:
            yield from self.diff(txn, old.ref, new.ref, path + "/")
        elif old.kind == KIND_DIR or new.kind == KIND_DIR:
            yield from self._one_side(txn, path, old, old_side=True)
            yield from self._one_side(txn, path, new, old_side=False)
        elif not old.same_content(new):
            yield path, old, new


class _Item(NamedTuple):
    """A position in a diff walk: a page not yet opened (entry None) or one entry."""

    key: str
    node: bytes
    entry: Entry | None


def _deeper(levels: int, directory: bytes) -> int:
    """One page level further down ``directory``'s B-tree; a damaged (cyclic) tree is bounded."""
    if levels >= PAGE_LEVELS_MAX:
        raise Corrupt(f"directory page {directory.hex()} nests deeper than {PAGE_LEVELS_MAX} "
                      "levels (damaged)")
    return levels + 1


def _check_depth(prefix: str, directory: bytes) -> None:
    """Directories nest at most ``DEPTH_MAX`` deep; deeper means an entry points back up."""
    if prefix.count("/") > DEPTH_MAX:
        raise Corrupt(f"directory page {directory.hex()} lies deeper than {DEPTH_MAX} "
                      "directories (damaged)")


def _split(items: list[_T]) -> list[list[_T]]:
    if len(items) <= MAX_FANOUT:
        return [items] if items else []
    parts = -(-len(items) // SPLIT_TO)
    step = len(items) / parts
    return [items[round(i * step) : round((i + 1) * step)] for i in range(parts)]
