"""B-tree directories on a real LMDB: behaviour against a dict model, and the cost of change."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfsmount.errors import AlreadyExists, Corrupt, NotADirectory
from pfsmount.pfs import Pfs
from pfsmount.store import KIND_DIR, KIND_FILE, MKDIR, Entry, tree
from pfsmount.store.meta import Meta
from pfsmount.store.tree import Change, Inner, Leaf, Trees


def _file(tag: str, size: int = 1) -> Entry:
    return Entry(KIND_FILE, size, 0o644, 0, blake3.blake3(tag.encode()).digest())


def _apply(trees: Trees, root: bytes, changes: Mapping[str, Change]) -> bytes:
    with trees.meta.write() as txn:
        new, size = trees.apply(txn, root, changes, 1)
        assert size == trees.size(txn, new)
    return new


def _pages(meta: Meta) -> int:
    with meta.read() as txn:
        return int(txn.stat(meta.db["nodes"])["entries"])


@contextmanager
def _small_pages() -> Iterator[None]:
    """Tiny pages, so that a few dozen names already make a multi-level B-tree."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tree, "MAX_FANOUT", 4)
        mp.setattr(tree, "SPLIT_TO", 2)
        yield


def _check_btree(trees: Trees, digest: bytes) -> tuple[str | None, str | None, int]:
    """Check one directory's pages: sorted names, index keys and sizes; returns the
    first and last name and the size. Recurses into subdirectories."""
    with trees.meta.read() as txn:
        node = trees.node(txn, digest)
    if isinstance(node, Leaf):
        assert node.names == sorted(set(node.names))
        for entry in node.entries:
            if entry.kind == KIND_DIR:
                assert _check_btree(trees, entry.ref)[2] == entry.size
        size = sum(e.size for e in node.entries)
        return (node.names[0], node.names[-1], size) if node.names else (None, None, size)
    assert isinstance(node, Inner)
    assert node.keys == sorted(set(node.keys))
    last = None
    for i, (key, child, size) in enumerate(
        zip(node.keys, node.children, node.sizes, strict=True)
    ):
        first, last, below = _check_btree(trees, child)
        assert first == key and below == size
        if i + 1 < len(node.keys):
            assert last is not None and last < node.keys[i + 1]
    return node.keys[0], last, sum(node.sizes)


# -- random operations against a dict model ----------------------------------------------------

_DIRS = ["d0", "d1", "d0/e0", "d0/e1", "d1/e0"]
_FILES = [f"f{i:02}" for i in range(12)] + [
    f"{d}/f{i:02}" for d in _DIRS for i in range(12)
]
_op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(_FILES), st.integers(0, 3)),
    st.tuples(st.just("del"), st.sampled_from(_FILES + _DIRS), st.just(0)),
    st.tuples(st.just("mkdir"), st.sampled_from(_DIRS), st.just(0)),
)


class _Model:
    def __init__(self) -> None:
        self.files: dict[str, Entry] = {}
        self.dirs: set[str] = set()

    def change(self, op: str, path: str, version: int) -> Change:
        """Apply one op to the model; returns the same change for the tree."""
        parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
        if op == "put":
            entry = _file(f"{path}:{version}", size=len(path) + version)
            self.files[path] = entry
            self.dirs.update(parents)
            return entry
        if op == "mkdir":
            self.dirs.update([*parents, path])
            return MKDIR
        for p in [p for p in self.files if p == path or p.startswith(path + "/")]:
            del self.files[p]
        self.dirs -= {d for d in self.dirs if d == path or d.startswith(path + "/")}
        return None  # deleting a missing path is a no-op

    def children(self, directory: str) -> list[str]:
        prefix = f"{directory}/" if directory else ""
        names = {
            p[len(prefix) :].split("/")[0]
            for p in itertools.chain(self.files, self.dirs)
            if p.startswith(prefix)
        }
        return sorted(names)

    def size(self, directory: str) -> int:
        prefix = f"{directory}/" if directory else ""
        return sum(e.size for p, e in self.files.items() if p.startswith(prefix))



def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(_op, min_size=1, max_size=12), min_size=1, max_size=8))
def test_random_operations_match_a_dict_model(
    pfs: Pfs, batches: list[list[tuple[str, str, int]]]
) -> None:
    trees = pfs.store.trees
    model = _Model()
    root = trees.empty
    with _small_pages():
        for batch in batches:
            before = dict(model.files)
            changes: dict[str, Change] = {}
            for op, path, version in batch:
                # One apply() takes independent paths; related ones go in the next batch.
                if any(_related(path, other) for other in changes):
                    continue
                changes[path] = model.change(op, path, version)
            old_root, root = root, _apply(trees, root, changes)
            _check_btree(trees, root)
            _compare(trees, old_root, root, model, before)


def _compare(
    trees: Trees, old_root: bytes, root: bytes, model: _Model, before: dict[str, Entry]
) -> None:
    with trees.meta.read() as txn:
        walked = dict(trees.walk(txn, root, dirs=True))
        assert {p for p, e in walked.items() if e.kind != KIND_DIR} == set(model.files)
        assert {p for p, e in walked.items() if e.kind == KIND_DIR} == model.dirs
        assert list(walked) == sorted(walked, key=lambda p: p.split("/"))
        for path, entry in model.files.items():
            assert trees.lookup(txn, root, path) == entry
        assert trees.lookup(txn, root, "nope") is None
        assert trees.lookup(txn, root, "f00/below-a-file") is None
        assert trees.lookup(txn, root, "").size == model.size("")  # type: ignore[union-attr]
        for directory in ["", *sorted(model.dirs)]:
            entry = trees.lookup(txn, root, directory)
            assert entry is not None and entry.kind == KIND_DIR
            assert entry.size == model.size(directory)
            names = model.children(directory)
            assert [n for n, _ in trees.listdir(txn, entry.ref)] == names
            assert trees.count(txn, entry.ref) == len(names)
            for after in [*names, "", "e", "f05x", "zz"]:
                got = [n for n, _ in trees.listdir(txn, entry.ref, after=after)]
                assert got == [n for n in names if n > after], after
        diff = {p: (a, b) for p, a, b in trees.diff(txn, old_root, root)}
    expected = {
        p: (before.get(p), model.files.get(p))
        for p in set(before) | set(model.files)
        if before.get(p) != model.files.get(p)
    }
    assert diff == expected


# -- conflicts and edge cases ------------------------------------------------------------------


def test_change_below_a_file_is_refused(pfs: Pfs) -> None:
    trees = pfs.store.trees
    root = _apply(trees, trees.empty, {"a": _file("a")})
    with pytest.raises(NotADirectory):
        _apply(trees, root, {"a/b": _file("b")})
    with pytest.raises(AlreadyExists):
        _apply(trees, root, {"a": MKDIR})


def test_deleting_a_missing_path_changes_nothing(pfs: Pfs) -> None:
    trees = pfs.store.trees
    root = _apply(trees, trees.empty, {"a/b": _file("b")})
    assert _apply(trees, root, {"x": None}) == root
    assert _apply(trees, root, {"x/y/z": None}) == root  # no directories appear
    assert _apply(trees, root, {"a/nope": None}) == root


def test_deleting_the_last_name_leaves_an_empty_directory(pfs: Pfs) -> None:
    trees = pfs.store.trees
    root = _apply(trees, trees.empty, {"a/b": _file("b", 5)})
    root = _apply(trees, root, {"a/b": None})
    with trees.meta.read() as txn:
        entry = trees.lookup(txn, root, "a")
        assert entry is not None and entry.kind == KIND_DIR and entry.size == 0
        assert list(trees.listdir(txn, entry.ref)) == []
    assert _apply(trees, root, {"a": None}) == trees.empty


# -- a big flat directory: a change costs a few pages -------------------------------------------

_N = 20_000


@pytest.fixture
def big(pfs: Pfs) -> tuple[Trees, bytes]:
    trees = pfs.store.trees
    names = {f"file-{i:06}": _file(str(i), 10) for i in range(_N)}
    return trees, _apply(trees, trees.empty, names)


def test_big_directory_is_complete_and_sorted(big: tuple[Trees, bytes]) -> None:
    trees, root = big
    with trees.meta.read() as txn:
        names = [n for n, _ in trees.listdir(txn, root)]
        assert names == [f"file-{i:06}" for i in range(_N)]
        assert trees.lookup(txn, root, "").size == 10 * _N  # type: ignore[union-attr]
    _check_btree(trees, root)
    assert _pages(trees.meta) > 40  # many pages: the cases below touch only a few of them


@pytest.mark.parametrize(
    "change",
    [
        {"file-010000": _file("changed", 7)},  # modify
        {"file-010000x": _file("new", 7)},  # insert
        {"file-010000": None},  # delete
        {"sub/new": _file("new", 7)},  # a new directory beside them
    ],
)
def test_one_change_in_a_big_directory_writes_few_pages(
    big: tuple[Trees, bytes], change: dict[str, Change]
) -> None:
    trees, root = big
    before = _pages(trees.meta)
    new = _apply(trees, root, change)
    assert _pages(trees.meta) - before <= 4

    fresh = Trees(trees.meta)  # an empty page cache: count what the diff must read
    with fresh.meta.read() as txn:
        diff = list(fresh.diff(txn, root, new))
    assert [p for p, _, _ in diff] == list(change)
    assert len(fresh._cache) <= 6


def test_listing_from_a_point_reads_few_pages(big: tuple[Trees, bytes]) -> None:
    trees, root = big
    fresh = Trees(trees.meta)
    with fresh.meta.read() as txn:
        page = list(itertools.islice(fresh.listdir(txn, root, after="file-012345"), 10))
        assert [n for n, _ in page] == [f"file-{i:06}" for i in range(12346, 12356)]
        assert fresh.find(txn, root, "file-019999") == _file("19999", 10)
    assert len(fresh._cache) <= 4


def test_growing_past_one_index_page_stays_balanced(pfs: Pfs) -> None:
    trees = pfs.store.trees
    with _small_pages():
        root = trees.empty
        for i in range(200):
            root = _apply(trees, root, {f"n{i:04}": _file(str(i))})
        _check_btree(trees, root)
        for i in range(0, 200, 3):
            root = _apply(trees, root, {f"n{i:04}": None})
        _check_btree(trees, root)
    with trees.meta.read() as txn:
        assert [n for n, _ in trees.listdir(txn, root)] == [
            f"n{i:04}" for i in range(200) if i % 3
        ]


def _damaged(meta: Meta, digest: bytes, node: tree.Node) -> None:
    """Store ``node`` under a name that is not its hash, as damage to LMDB can."""
    with meta.write() as txn:
        txn.put(digest, tree._encoder.encode(node), db=meta.db["nodes"])


def test_a_page_that_refers_back_to_itself_is_damage_not_an_endless_loop(
        tmp_path: Path) -> None:
    meta = Meta(tmp_path / "meta")
    trees = Trees(meta)
    pages = blake3.blake3(b"pages").digest()
    _damaged(meta, pages, Inner(["a", "b"], [trees.empty, pages], [0, 0]))
    dirs = blake3.blake3(b"dirs").digest()
    _damaged(meta, dirs, Leaf(["d"], [Entry(KIND_DIR, 0, 0o755, 0, dirs)]))
    with meta.read() as txn:
        with pytest.raises(Corrupt, match="deeper than 32 levels"):
            list(trees.listdir(txn, pages))
        with pytest.raises(Corrupt, match="deeper than 32 levels"):
            trees.count(txn, pages)
        with pytest.raises(Corrupt, match="deeper than 32 levels"):
            trees.find(txn, pages, "z")
        with pytest.raises(Corrupt, match="refers back to itself"):
            list(trees.diff(txn, trees.empty, pages))
        with pytest.raises(Corrupt, match="deeper than 256 directories"):
            list(trees.walk(txn, dirs))
        with pytest.raises(Corrupt, match="deeper than 256 directories"):
            list(trees.diff(txn, trees.empty, dirs))
    meta.close()
