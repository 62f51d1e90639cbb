"""Packs and contents on a real LMDB and real pack files: dedup, compression, ranges, crashes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import blake3
import pytest

from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data, LocalPath
from pfsmount.pfs.fsck import fsck
from pfsmount.store import Store, WriteBatch, packs
from pfsmount.store.chunking import CODEC_RAW, CODEC_ZSTD
from pfsmount.store.content import Content


def _random(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _pack_bytes(root: Path) -> int:
    """Bytes in pack files, sealed or still staged: what the disk holds for chunk data."""
    return sum(p.stat().st_size for d in ("packs", "staging") for p in (root / d).glob("*"))


def _store(store: Store, *blobs: bytes) -> list[Content]:
    batch = WriteBatch()
    out = [store.contents.write_bytes(batch, b) for b in blobs]
    with store.meta.write() as txn:
        store.contents.commit(batch, txn)
    return out


def _read(store: Store, digest: bytes, offset: int = 0, size: int = 1 << 40) -> bytes:
    with store.meta.read() as txn:
        return store.contents.read(txn, digest, offset, size)


def _rows(store: Store, db: str) -> int:
    with store.meta.read() as txn:
        return int(txn.stat(store.meta.db[db])["entries"])


# -- dedup -------------------------------------------------------------------------------------


def test_identical_content_is_stored_once(pfs: Pfs) -> None:
    store = pfs.store
    data = _random(3 << 20)
    (first,) = _store(store, data)
    packed, chunks, contents = _pack_bytes(store.root), _rows(store, "chunks"), _rows(
        store, "contents"
    )
    assert packed >= len(data)  # random data: stored raw
    (again,) = _store(store, data)
    assert again == first
    assert _pack_bytes(store.root) == packed
    assert (_rows(store, "chunks"), _rows(store, "contents")) == (chunks, contents)
    assert _read(store, first.digest) == data


def test_duplicates_inside_one_batch_are_written_once(pfs: Pfs) -> None:
    store = pfs.store
    data = _random(1 << 20, seed=2)
    a, b = _store(store, data, data)
    assert a == b
    assert len(data) <= _pack_bytes(store.root) < 2 * len(data)


def test_a_chunk_location_never_changes_once_indexed(pfs: Pfs) -> None:
    # Two writers that stored the same new chunk before either indexed it: the first index
    # row wins (meta invariant 6); the second copy is unreferenced garbage.
    store = pfs.store
    data = _random(100_000, seed=11)
    first, second = WriteBatch(), WriteBatch()
    content = store.contents.write_bytes(first, data)
    assert store.contents.write_bytes(second, data) == content
    with store.meta.write() as txn:
        store.contents.commit(first, txn)
    with store.meta.read() as txn:
        where = store.packs.location(txn, content.digest)
    with store.meta.write() as txn:
        store.contents.commit(second, txn)
    with store.meta.read() as txn:
        assert store.packs.location(txn, content.digest) == where
    assert _read(store, content.digest) == data


def test_shared_chunks_of_edited_file_are_not_stored_again(pfs: Pfs) -> None:
    store = pfs.store
    data = _random(6 << 20, seed=3)
    _store(store, data)
    before = _pack_bytes(store.root)
    middle = len(data) // 2
    (edited,) = _store(store, data[:middle] + b"inserted" + data[middle:])
    grew = _pack_bytes(store.root) - before
    assert 0 < grew < len(data) // 4  # only the chunks around the edit
    assert _read(store, edited.digest) == data[:middle] + b"inserted" + data[middle:]


def test_content_name_is_blake3_of_whole_file(pfs: Pfs) -> None:
    small, big, empty = b"hello\n", _random(2 << 20, seed=4), b""
    contents = _store(pfs.store, small, big, empty)
    for blob, content in zip((small, big, empty), contents, strict=True):
        assert content == Content(blake3.blake3(blob).digest(), len(blob))
        assert _read(pfs.store, content.digest) == blob


# -- compression -------------------------------------------------------------------------------


def _codecs(store: Store, digest: bytes) -> set[int]:
    with store.meta.read() as txn:
        table = store.contents.table(txn, digest)
        return {store.packs.location(txn, d).codec for d in table.digests}


def test_compressible_data_is_stored_compressed(pfs: Pfs) -> None:
    text = b"".join(b"%08d,apple,%d\n" % (i, i % 97) for i in range(200_000))
    (content,) = _store(pfs.store, text)
    assert _codecs(pfs.store, content.digest) == {CODEC_ZSTD}
    assert _pack_bytes(pfs.store.root) < len(text) // 4
    assert _read(pfs.store, content.digest) == text


def test_incompressible_data_is_stored_raw(pfs: Pfs) -> None:
    data = _random(2 << 20, seed=5)
    (content,) = _store(pfs.store, data)
    assert _codecs(pfs.store, content.digest) == {CODEC_RAW}
    assert len(data) <= _pack_bytes(pfs.store.root) <= len(data) + 1024


# -- reading ranges ----------------------------------------------------------------------------


def test_reads_at_every_chunk_boundary(pfs: Pfs) -> None:
    data = _random(2 << 20, seed=6)
    (content,) = _store(pfs.store, data)
    with pfs.store.meta.read() as txn:
        ends = pfs.store.contents.table(txn, content.digest).ends
    assert len(ends) >= 3 and ends[-1] == len(data)
    size = len(data)
    ranges = [(0, size), (0, 0), (size, 10), (size + 5, 1), (size - 1, 100), (0, 1)]
    for e in [0, *ends]:
        for off, n in [(e - 1, 1), (e - 1, 2), (e, 1), (e - 3, 7), (e, 0), (e - 1000, 5000)]:
            if off >= 0:
                ranges.append((off, n))
    ranges.append((ends[0] - 10, ends[2] - ends[0] + 20))  # spans three chunks
    for off, n in ranges:
        assert _read(pfs.store, content.digest, off, n) == data[off : off + n], (off, n)


def test_user_reads_match_stored_ranges(pfs: Pfs) -> None:
    data = _random(1 << 20, seed=7)
    pfs.repos.create("data")
    pfs.files.put("data@master", Data(data), path="blob")
    _, entry = pfs.files.open("data@master:/blob")
    for off, n in [(0, None), (100, 10), (len(data) - 3, None), (len(data), 5), (5, 0)]:
        got = b"".join(pfs.files.read(entry, off, n))
        assert got == (data[off:] if n is None else data[off : off + n])


def test_full_packs_are_sealed_and_still_read(pfs: Pfs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packs, "PACK_TARGET", 1 << 20)
    blobs = [_random(700_000, seed=10 + i) for i in range(6)]
    contents = _store(pfs.store, *blobs)
    sealed = list((pfs.store.root / "packs").glob("*.pack"))
    assert len(sealed) >= 2
    for blob, content in zip(blobs, contents, strict=True):
        assert _read(pfs.store, content.digest) == blob


# -- crashes -----------------------------------------------------------------------------------

_CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from pfsmount.pfs import Pfs
    from pfsmount.pfs.files import LocalPath
    from pfsmount.store import WriteBatch

    pfs = Pfs(Path(sys.argv[1]))
    pfs.repos.create("data")
    pfs.files.put("data@master", LocalPath(Path(sys.argv[2])), path="kept")
    # An operation that appended chunks and then died before indexing them.
    pfs.store.contents.write_bytes(WriteBatch(), os.urandom(500_000))
    os._exit(0)  # no close(): the open pack stays in staging, as after a crash
    """
)


def test_staging_pack_left_by_a_crash_is_sealed_at_open(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = _random(1 << 20, seed=8)
    src = tmp_path / "src"
    src.write_bytes(data)
    subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(root), str(src)], check=True, timeout=60
    )
    assert list((root / "staging").glob("*.pack"))  # the crash left an unsealed pack
    assert not list((root / "packs").glob("*.pack"))

    pfs = Pfs(root)
    try:
        assert not list((root / "staging").glob("*.pack"))
        assert len(list((root / "packs").glob("*.pack"))) == 1
        _, entry = pfs.files.open("data@master:/kept")
        assert b"".join(pfs.files.read(entry)) == data
        pfs.files.put("data@master", Data(b"after restart"), path="new")
        assert fsck(pfs, verify_data=True).errors == []
    finally:
        pfs.close()


# -- damage that fsck must find ----------------------------------------------------------------


def _damaged_store(tmp_path: Path) -> tuple[Path, Path, str]:
    """A closed store holding one file in one sealed pack; returns root, pack and commit."""
    root = tmp_path / "root"
    src = tmp_path / "src"
    src.write_bytes(_random(1 << 20, seed=9))
    pfs = Pfs(root)
    pfs.repos.create("data")
    commit = pfs.files.put("data@master", LocalPath(src), path="dir/file")
    assert fsck(pfs, verify_data=True).ok
    pfs.close()
    (pack,) = (root / "packs").glob("*.pack")
    return root, pack, commit.id


def _fsck(root: Path, verify_data: bool = False) -> list[str]:
    pfs = Pfs(root)
    try:
        return fsck(pfs, verify_data=verify_data).errors
    finally:
        pfs.close()


def test_fsck_finds_a_truncated_pack(tmp_path: Path) -> None:
    root, pack, _ = _damaged_store(tmp_path)
    os.truncate(pack, pack.stat().st_size - 10)
    errors = _fsck(root)
    assert len(errors) == 1
    assert "outside pack" in errors[0] and pack.name in errors[0]


def test_fsck_finds_a_missing_pack(tmp_path: Path) -> None:
    root, pack, commit = _damaged_store(tmp_path)
    pack.unlink()
    errors = _fsck(root)
    assert len(errors) == 2  # the file that loses data, then the pack
    assert errors[0].startswith(f"data@{commit}:/dir/file: ") and "missing" in errors[0]
    assert f"pack {pack.name} is missing" in errors[1]


def test_fsck_verify_data_finds_a_flipped_byte(tmp_path: Path) -> None:
    root, pack, commit = _damaged_store(tmp_path)
    with open(pack, "r+b") as f:
        f.seek(pack.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert _fsck(root) == []  # structure is intact: only reading the data can tell
    errors = _fsck(root, verify_data=True)
    assert len(errors) == 1
    assert f"data@{commit}:/dir/file" in errors[0] and "damaged" in errors[0]


def test_copy_to_writes_the_whole_file_from_staged_and_sealed_packs(tmp_path: Path) -> None:
    data = _random(3 << 20, seed=11) + b"a compressible line\n" * 150_000
    root = tmp_path / "root"
    store = Store(root)
    try:
        (content,) = _store(store, data)
        with store.meta.read() as txn:
            table = store.contents.table(txn, content.digest)
            codecs = {store.packs.location(txn, d).codec for d in table.digests}
        assert codecs == {CODEC_RAW, CODEC_ZSTD}
        for name in ("staged", "sealed"):
            if name == "sealed":  # reopened: the pack is an object, raw chunks copy in-kernel
                store.close()
                store = Store(root)
            out = tmp_path / name
            with open(out, "wb") as f:
                assert store.contents.copy_to(content.digest, f.fileno()) == len(data)
            assert out.read_bytes() == data
    finally:
        store.close()


def test_a_large_write_whose_source_fails_midway_ends_at_once(pfs: Pfs) -> None:
    """Groups of chunks already handed to threads finish or are cancelled; nothing hangs,
    and the threads serve the next write."""

    class Failing:
        def __init__(self) -> None:
            self.sent = 0

        def read(self, n: int) -> bytes:
            if self.sent >= 40 << 20:
                raise OSError(5, "Input/output error")
            self.sent += n
            return os.urandom(n)

    batch = WriteBatch()
    with pytest.raises(OSError, match="Input/output error"):
        pfs.store.contents.write_stream(batch, Failing())
    _store(pfs.store, _random(16 << 20, seed=6))  # the threads are free for the next write
