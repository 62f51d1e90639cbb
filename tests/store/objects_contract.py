"""The contract every ``ObjectStore`` backend passes (dulwich's ``ObjectStoreTests`` is the
model): put, ranged get, size, list, delete, a missing object, a short object, concurrent
readers and atomic puts, all through the backend a URL names.

A backend's test module subclasses ``ObjectStoreContract`` as ``Test<Backend>Objects`` and
gives it two things: ``url`` (a fixture: the URL of an empty store, after starting whatever
server it needs) and ``truncate`` (damage: make an object shorter behind the backend's back,
as a torn upload or a damaged disk would). Not collected itself (no ``test_`` prefix). The
last test runs a whole pfsmount store on the backend.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pfsmount.errors import Corrupt
from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from pfsmount.pfs.fsck import fsck
from pfsmount.store.objects import ObjectStore, open_objects

SIZE = 100_000


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


class ObjectStoreContract:
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        raise NotImplementedError("a backend's test class gives the URL of an empty store")

    def truncate(self, store: ObjectStore, name: str, size: int) -> None:
        """Cut object ``name`` to ``size`` bytes without going through ``store``."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, url: str) -> Iterator[ObjectStore]:
        store = open_objects(url)
        yield store
        store.close()

    @pytest.fixture
    def scratch(self, tmp_path: Path) -> Path:
        return tmp_path / "scratch"

    def put(self, store: ObjectStore, scratch: Path, name: str, data: bytes) -> None:
        scratch.mkdir(exist_ok=True)
        src = scratch / f"{name}.src"
        src.write_bytes(data)
        store.put_file(name, src)

    # -- put, size, list, delete -------------------------------------------------------------

    def test_a_put_object_reads_back_whole(self, store: ObjectStore, scratch: Path) -> None:
        data = _bytes(SIZE, 1)
        self.put(store, scratch, "a.pack", data)
        assert store.size("a.pack") == SIZE
        assert store.get_range("a.pack", 0, SIZE) == data
        assert list(store.list()) == ["a.pack"]

    def test_list_names_every_object_and_only_those(self, store: ObjectStore,
                                                    scratch: Path) -> None:
        assert list(store.list()) == []
        names = [f"{i:016x}.pack" for i in range(5)]
        for i, name in enumerate(names):
            self.put(store, scratch, name, _bytes(1000 + i, i))
        assert sorted(store.list()) == names
        assert [store.size(n) for n in names] == [1000 + i for i in range(5)]

    def test_a_deleted_object_is_gone(self, store: ObjectStore, scratch: Path) -> None:
        self.put(store, scratch, "a.pack", b"a" * 10)
        self.put(store, scratch, "b.pack", b"b" * 10)
        store.delete("a.pack")
        assert sorted(store.list()) == ["b.pack"]
        assert store.size("a.pack") is None
        with pytest.raises(Corrupt, match=r"a\.pack"):
            store.get_range("a.pack", 0, 1)
        assert store.get_range("b.pack", 0, 10) == b"b" * 10
        store.delete("a.pack")  # deleting what is not there is no error

    # -- ranged reads ------------------------------------------------------------------------

    @pytest.mark.parametrize(("offset", "length"), [
        (0, 1), (0, 4096), (SIZE // 2 - 7, 12_345), (SIZE - 4096, 4096), (SIZE - 1, 1),
    ], ids=["first-byte", "start", "middle", "end", "last-byte"])
    def test_a_ranged_get_is_exactly_that_range(self, store: ObjectStore, scratch: Path,
                                                offset: int, length: int) -> None:
        data = _bytes(SIZE, 2)
        self.put(store, scratch, "r.pack", data)
        assert store.get_range("r.pack", offset, length) == data[offset : offset + length]

    @pytest.mark.parametrize(("offset", "length"), [(SIZE - 10, 11), (SIZE, 1), (SIZE + 50, 10)],
                             ids=["across-the-end", "at-the-end", "past-the-end"])
    def test_a_ranged_get_past_the_end_is_an_error(self, store: ObjectStore, scratch: Path,
                                                   offset: int, length: int) -> None:
        self.put(store, scratch, "r.pack", _bytes(SIZE, 3))
        with pytest.raises(Corrupt, match=r"r\.pack"):
            store.get_range("r.pack", offset, length)

    def test_read_into_fills_the_buffer_and_stops_at_the_end(self, store: ObjectStore,
                                                             scratch: Path) -> None:
        data = _bytes(SIZE, 4)
        self.put(store, scratch, "r.pack", data)
        buffer = bytearray(10_000)
        assert store.read_into("r.pack", 500, memoryview(buffer)) == 10_000
        assert buffer == data[500:10_500]
        assert store.read_into("r.pack", SIZE - 100, memoryview(buffer)) == 100
        assert buffer[:100] == data[-100:]
        assert store.read_into("r.pack", SIZE + 1, memoryview(buffer)) == 0

    # -- damage ------------------------------------------------------------------------------

    def test_a_missing_object_is_corrupt(self, store: ObjectStore) -> None:
        assert store.size("none.pack") is None
        with pytest.raises(Corrupt, match=r"none\.pack"):
            store.get_range("none.pack", 0, 10)
        with pytest.raises(Corrupt, match=r"none\.pack"):
            store.read_into("none.pack", 0, memoryview(bytearray(10)))

    def test_a_short_object_is_an_error_never_short_data(self, store: ObjectStore,
                                                         scratch: Path) -> None:
        """A range that a truncated object no longer holds fails; what it still holds reads
        as before, and ``size`` and ``read_into`` say where it now ends."""
        data = _bytes(SIZE, 5)
        self.put(store, scratch, "s.pack", data)
        self.truncate(store, "s.pack", 60_000)
        assert store.size("s.pack") == 60_000
        with pytest.raises(Corrupt, match=r"s\.pack"):
            store.get_range("s.pack", 50_000, 20_000)
        with pytest.raises(Corrupt, match=r"s\.pack"):
            store.get_range("s.pack", 70_000, 100)
        assert store.get_range("s.pack", 10_000, 50_000) == data[10_000:60_000]
        buffer = bytearray(20_000)
        assert store.read_into("s.pack", 50_000, memoryview(buffer)) == 10_000

    # -- threads -----------------------------------------------------------------------------

    def test_concurrent_readers_each_get_their_own_range(self, store: ObjectStore,
                                                         scratch: Path) -> None:
        blobs = {f"{i}.pack": _bytes(SIZE, 10 + i) for i in range(3)}
        for name, data in blobs.items():
            self.put(store, scratch, name, data)

        def reads(seed: int) -> int:
            r = random.Random(seed)
            for _ in range(100):
                name = r.choice(sorted(blobs))
                offset = r.randrange(SIZE)
                length = r.randrange(1, SIZE - offset + 1)
                if r.random() < 0.5:
                    got = store.get_range(name, offset, length)
                else:
                    buffer = bytearray(length)
                    got = bytes(buffer[: store.read_into(name, offset, memoryview(buffer))])
                assert got == blobs[name][offset : offset + length], (name, offset, length)
            return 100

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(reads, range(8))) == 800

    def test_a_reader_never_sees_part_of_an_object(self, store: ObjectStore,
                                                   scratch: Path) -> None:
        """While objects are put, a reader finds each one missing or whole, never part."""
        blobs = [_bytes(4 << 20, 20 + i) for i in range(4)]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                for i, data in enumerate(blobs):
                    name = f"{i}.pack"
                    size = store.size(name)
                    if size is None:
                        continue
                    assert size == len(data), (name, size)
                    assert store.get_range(name, len(data) - 4096, 4096) == data[-4096:]

        watcher = ThreadPoolExecutor(1)
        watching = watcher.submit(watch)
        for i, data in enumerate(blobs):
            self.put(store, scratch, f"{i}.pack", data)
        done.set()
        watching.result()
        watcher.shutdown()
        assert sorted(store.list()) == [f"{i}.pack" for i in range(4)]

    # -- a pfsmount store on it --------------------------------------------------------------

    def test_a_store_keeps_its_packs_there(self, url: str, tmp_path: Path) -> None:
        """A store opened on the URL seals its packs into the backend (another client of
        the same URL lists them), reads its files back from there and checks clean."""
        data = b"kept in the object store\n" * 10_000
        pfs = Pfs(tmp_path / "root", open_objects(url))
        try:
            pfs.repos.create("data")
            pfs.files.put("data@master", Data(data), path="f")
            pfs.store.packs.seal()
            other = open_objects(url)
            try:
                assert [Path(n).suffix for n in other.list()] == [".pack"]
            finally:
                other.close()
            assert not (tmp_path / "root" / "packs").exists()
            _, entry = pfs.files.open("data@master:/f")
            assert b"".join(pfs.files.read(entry)) == data
            assert fsck(pfs, verify_data=True).errors == []
        finally:
            pfs.close()
