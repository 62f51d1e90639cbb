"""Batch readers and the pack paths they feed: what a reader returns for each kind of path,
that prepared files store and dedup like any other write, pipelined large writes, and packs
sealed in the background."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import blake3

from pfsmount.pfs import Pfs
from pfsmount.store import Store, WriteBatch, packs
from pfsmount.store.chunking import CODEC_RAW, CODEC_ZSTD
from pfsmount.store.readers import FILE_LIMIT, Failed, Prepared, Readers, read_batch


def _random(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _read(store: Store, digest: bytes) -> bytes:
    with store.meta.read() as txn:
        return store.contents.read(txn, digest, 0, 1 << 40)


def _commit(store: Store, batch: WriteBatch) -> None:
    with store.meta.write() as txn:
        store.contents.commit(batch, txn)


def test_read_batch_reports_each_kind_of_path(tmp_path: Path) -> None:
    small, text, big = tmp_path / "small", tmp_path / "text", tmp_path / "big"
    small.write_bytes(_random(4096))
    text.write_bytes(b"the same line again\n" * 20_000)  # several chunks, compressible
    text.chmod(0o755)
    big.write_bytes(_random(FILE_LIMIT + 1))
    (tmp_path / "link").symlink_to("small")
    os.mkfifo(tmp_path / "fifo")
    paths = [str(tmp_path / n) for n in ("small", "text", "big", "link", "fifo", "gone")]
    got = read_batch(paths)
    assert [type(r).__name__ for r in got] == [
        "Prepared", "Prepared", "Large", "Skipped", "Skipped", "Failed"]
    first, second = got[0], got[1]
    assert isinstance(first, Prepared) and isinstance(second, Prepared)
    assert first.digest == blake3.blake3(small.read_bytes()).digest()  # one chunk: its name
    assert (first.size, first.mode, first.chunks[0].codec) == (4096, 0o644, CODEC_RAW)
    assert second.digest == blake3.blake3(text.read_bytes()).digest()  # the whole file
    assert second.mode == 0o755 and {c.codec for c in second.chunks} == {CODEC_ZSTD}
    assert isinstance(got[5], Failed) and "gone" in got[5].message


def test_prepared_files_store_once_and_read_back(pfs: Pfs, tmp_path: Path) -> None:
    store = pfs.store
    blobs = [_random(5000, seed=i % 3) for i in range(6)]  # three distinct contents
    for i, blob in enumerate(blobs):
        (tmp_path / f"f{i}").write_bytes(blob)
    results = read_batch([str(tmp_path / f"f{i}") for i in range(6)])
    batch = WriteBatch()
    contents = store.contents.write_prepared(
        batch, [r for r in results if isinstance(r, Prepared)])
    assert len(batch.chunks) == 3
    _commit(store, batch)
    assert [_read(store, c.digest) for c in contents] == blobs
    again = WriteBatch()  # already indexed: nothing new is appended
    store.contents.write_prepared(again, [r for r in results if isinstance(r, Prepared)])
    assert len(again.chunks) == 0


def _batches(top: Path, files: int, per_batch: int, size: int) -> list[list[str]]:
    """``files`` random files of about ``size`` bytes in ``top``, as batches of paths."""
    for i in range(files):
        (top / f"f{i}").write_bytes(_random(size + i, seed=i))
    return [[str(top / f"f{i}") for i in range(j, j + per_batch)]
            for j in range(0, files, per_batch)]


def test_reader_processes_return_what_the_thread_does(tmp_path: Path) -> None:
    batches = _batches(tmp_path, 20, 5, 3000)
    readers = Readers(workers=2)
    try:
        assert list(readers.map(batches, parallel=True)) == list(
            readers.map(batches, parallel=False))
    finally:
        readers.close()


def test_pipelined_write_names_and_stores_like_a_plain_one(pfs: Pfs, tmp_path: Path) -> None:
    store = pfs.store
    data = _random(12 << 20, seed=4) + b"text line\n" * 400_000  # raw chunks and zstd ones
    src = tmp_path / "src"
    src.write_bytes(data)
    batch = WriteBatch()
    content = store.contents.write_file(batch, src)
    assert content.digest == blake3.blake3(data).digest() and content.size == len(data)
    again = store.contents.write_bytes(batch, data)  # the same chunks, pending in the batch
    assert again == content
    _commit(store, batch)
    assert _read(store, content.digest) == data


def test_full_packs_are_sealed_in_the_background(pfs: Pfs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(packs, "PACK_TARGET", 1 << 20)
    store = pfs.store
    blobs = [_random(700_000, seed=i) for i in range(6)]
    batch = WriteBatch()
    contents = [store.contents.write_bytes(batch, b) for b in blobs]
    store.packs.sync()  # waits for the seals
    sealed = list((store.root / "packs").glob("*.pack"))
    assert len(sealed) >= 2
    assert all(store.packs.pack_size(int(p.stem, 16)) == p.stat().st_size for p in sealed)
    _commit(store, batch)
    assert [_read(store, c.digest) for c in contents] == blobs


def test_a_killed_reader_process_costs_speed_not_results(tmp_path: Path) -> None:
    batches = _batches(tmp_path, 40, 4, 2000)
    readers = Readers(workers=2)
    try:
        readers.start()
        pool = readers._pool
        assert pool is not None
        for pid in list(pool._processes):  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
        expect = list(readers.map(batches, parallel=False))
        assert list(readers.map(batches, parallel=True)) == expect
        assert readers._pool is None  # dropped; the next call starts a new one
        assert list(readers.map(batches, parallel=True)) == expect
    finally:
        readers.close()


def test_closing_while_the_workers_start_is_quiet() -> None:
    import threading

    readers = Readers(workers=2)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            readers.start()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=start)
    thread.start()
    readers.close()
    thread.join(30)
    assert errors == []
