"""Content-defined chunking, chunk names and compression (pure functions, no disk state)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import blake3
import pytest

from pfsmount.store import chunking
from pfsmount.store.chunking import CODEC_RAW, CODEC_ZSTD, MAX_CHUNK, MIN_CHUNK


def _random(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _names(data: bytes) -> list[bytes]:
    return [chunking.digest(c) for c in chunking.split_buffer(data)]


def test_chunks_reassemble_and_respect_size_bounds() -> None:
    data = _random(8 << 20)
    chunks = [bytes(c) for c in chunking.split_buffer(data)]
    assert b"".join(chunks) == data
    assert len(chunks) > 4
    for c in chunks[:-1]:
        assert MIN_CHUNK <= len(c) <= MAX_CHUNK
    assert 0 < len(chunks[-1]) <= MAX_CHUNK


def test_small_insert_moves_only_nearby_chunks() -> None:
    data = _random(8 << 20)
    middle = len(data) // 2
    edited = data[:middle] + b"a small insert of some bytes" + data[middle:]
    before, after = _names(data), _names(edited)
    shared = set(before) & set(after)
    assert len(before) >= 10
    # Only the chunk(s) around the edit differ; everything before and after is shared.
    assert len(set(before) - shared) <= 2
    assert len(set(after) - shared) <= 2
    assert before[0] == after[0] and before[-1] == after[-1]


def test_prefix_insert_keeps_tail_chunks() -> None:
    data = _random(4 << 20, seed=2)
    before, after = _names(data), _names(b"header line\n" + data)
    assert len(set(before) - set(after)) <= 2


def test_file_stream_and_buffer_chunk_identically(tmp_path: Path) -> None:
    # Dedup across `put` from bytes, a local file and a URL stream relies on this.
    data = _random(3 << 20, seed=3)
    src = tmp_path / "f"
    src.write_bytes(data)
    from_buffer = _names(data)
    from_file = [chunking.digest(c) for c in chunking.split_file(src)]
    from_stream = [chunking.digest(c) for c in chunking.split_stream(io.BytesIO(data))]
    assert from_buffer == from_file == from_stream


def test_small_and_empty_buffers() -> None:
    assert list(chunking.split_buffer(b"")) == []
    small = b"x" * MIN_CHUNK
    assert [bytes(c) for c in chunking.split_buffer(small)] == [small]


def test_digest_is_blake3() -> None:
    assert chunking.digest(b"hello") == blake3.blake3(b"hello").digest()
    assert len(chunking.digest(b"")) == 32


@pytest.mark.parametrize(
    ("data", "codec"),
    [
        (b"abc" * 100_000, CODEC_ZSTD),  # compressible and large: sampled, then compressed
        (b"line of text\n" * 100, CODEC_ZSTD),  # compressible and small
        (_random(1 << 20, seed=4), CODEC_RAW),  # incompressible and large: sample says no
        (_random(5000, seed=5), CODEC_RAW),  # incompressible and small
        (b"a" * 100, CODEC_RAW),  # too small to bother
    ],
)
def test_zstd_only_when_it_pays(data: bytes, codec: int) -> None:
    got, stored = chunking.compress(data)
    assert got == codec
    if codec == CODEC_ZSTD:
        assert len(stored) <= 0.9 * len(data)
    else:
        assert bytes(stored) == data
    assert chunking.decompress(got, bytes(stored), len(data)) == data


def test_barely_compressible_data_is_stored_raw() -> None:
    # Saves well under a tenth: not worth the decompression on every read.
    data = bytearray(_random(200_000, seed=6))
    data[::20] = b"\0" * len(data[::20])
    codec, stored = chunking.compress(bytes(data))
    assert codec == CODEC_RAW
    assert bytes(stored) == bytes(data)


@pytest.mark.parametrize("size", [0, 1, 5 << 20, 6 << 20, (6 << 20) + 12_345, 23 << 20])
def test_large_files_chunk_window_by_window_like_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(chunking, "SMALL_FILE", 0)  # every file goes through the windows
    monkeypatch.setattr(chunking, "_WINDOW", 3 << 20)
    data = _random(size, seed=size) + b"text, not random\n" * (size // 64)
    src = tmp_path / "f"
    src.write_bytes(data)
    with open(src, "rb") as f:
        windows = [bytes(c) for c in chunking.split_fd(f.fileno())]
    assert windows == [bytes(c) for c in chunking.split_buffer(data)]
