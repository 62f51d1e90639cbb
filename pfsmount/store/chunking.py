"""Content-defined chunking, chunk naming and compression: pure functions over bytes.

Chunk boundaries come from FastCDC (compiled, several GB/s), so an edit moves only the
chunks around it and identical content anywhere yields identical chunks. Chunks are named
by BLAKE3 of their raw bytes. Compression is zstd level 1, kept only when it saves a tenth:
on text it shrinks about as much as level 3 at nearly twice the speed, and compression is
most of the cost of a put of compressible data. Nothing here touches disk or metadata.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import blake3
import pyfastcdc
import zstandard

MIN_CHUNK = 64 * 1024
AVG_CHUNK = 256 * 1024  # FastCDC's real mean is AVG_CHUNK + MIN_CHUNK
MAX_CHUNK = 2 * 1024 * 1024

CODEC_RAW = 0
CODEC_ZSTD = 1

_SAMPLE = 16 * 1024
_local = threading.local()


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _cdc() -> pyfastcdc.FastCDC:
    # FastCDC objects are not safe to share between threads.
    cdc = getattr(_local, "cdc", None)
    if cdc is None:
        cdc = _local.cdc = pyfastcdc.FastCDC(AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)
    return cdc


def digest(data: bytes | memoryview) -> bytes:
    """The 32-byte BLAKE3 name of ``data``."""
    return blake3.blake3(data).digest()


def split_buffer(data: bytes | memoryview) -> Iterator[memoryview]:
    """Chunk an in-memory buffer; the views stay valid while ``data`` lives."""
    if len(data) <= MIN_CHUNK:
        if data:
            yield memoryview(data)
        return
    for chunk in _cdc().cut_buf(data):
        yield chunk.data


SMALL_FILE = 8 * 1024 * 1024
_WINDOW = 16 * 1024 * 1024


def split_file(path: Path) -> Iterator[bytes | memoryview]:
    """Chunk a local file (see ``split_fd``)."""
    with open(path, "rb", buffering=0) as f:
        yield from split_fd(f.fileno())


def split_fd(fd: int) -> Iterator[bytes | memoryview]:
    """Chunk an open file from offset 0: small files in one read, large ones by windows.

    Views stay valid while they are referenced. (A stream chunker would allocate a
    ``MAX_CHUNK`` buffer per file, which dominates the cost of small files.)
    """
    size = os.fstat(fd).st_size
    if size <= SMALL_FILE:
        data = os.pread(fd, size, 0)
        while len(data) < size:  # short reads: keep going until EOF
            more = os.pread(fd, size - len(data), len(data))
            if not more:
                break
            data += more
        yield from split_buffer(data)
        return
    yield from _split_windows(fd)


def _split_windows(fd: int) -> Iterator[memoryview]:
    """Chunk a large file window by window, the next window read by another thread.

    The chunker holds the GIL; reading into a buffer does not, so the two overlap (page
    faults of a mapped file would happen under the GIL, in the chunker). A chunk depends
    only on the bytes from its own start, so cutting window by window yields the same
    chunks as one pass, provided the last chunk of a window, which the window's end may
    have cut short, is carried into the next window instead of being yielded.
    """
    reader = ThreadPoolExecutor(1, thread_name_prefix="pfsmount-read")
    try:
        offset = 0
        pending = reader.submit(_read_window, fd, offset)
        carry = memoryview(b"")
        while True:
            buf, got = pending.result()
            offset += got
            eof = got < _WINDOW
            if not eof:
                pending = reader.submit(_read_window, fd, offset)
            start = MAX_CHUNK - len(carry)
            buf[start:MAX_CHUNK] = carry
            view = memoryview(buf)[start : MAX_CHUNK + got]
            last: memoryview | None = None
            for chunk in _cdc().cut_buf(view):
                if last is not None:
                    yield last
                last = chunk.data
            if eof:
                if last is not None:
                    yield last
                return
            carry = last if last is not None else memoryview(b"")
    finally:
        reader.shutdown(cancel_futures=True)


def _read_window(fd: int, offset: int) -> tuple[bytearray, int]:
    """The next ``_WINDOW`` bytes at ``offset``, after ``MAX_CHUNK`` bytes of room for the
    carried chunk; short only at end of file. (Anonymous ``mmap`` buffers, which skip
    zeroing, measured slower: every page then faults inside ``preadv``.)"""
    buf = bytearray(MAX_CHUNK + _WINDOW)
    view = memoryview(buf)[MAX_CHUNK:]
    got = 0
    while got < _WINDOW:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return buf, got


def split_stream(stream: Readable) -> Iterator[bytes]:
    """Chunk a stream of unknown length; each yielded chunk is a private copy."""
    for chunk in _cdc().cut_stream(stream):  # type: ignore[arg-type]
        yield bytes(chunk.data)


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "zc", None)
    if c is None:
        c = _local.zc = zstandard.ZstdCompressor(level=1)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def compress(raw: bytes | memoryview) -> tuple[int, bytes | memoryview]:
    """Return ``(codec, stored)``: zstd when it saves at least a tenth, else the raw bytes.

    Large chunks are judged on a 16 KiB sample first, so incompressible data (media, already
    compressed files) costs one small trial, not a full compression.
    """
    if len(raw) < 128:
        return CODEC_RAW, raw
    zc = _compressor()
    if len(raw) > 2 * _SAMPLE:
        sample = raw[:_SAMPLE]
        if len(zc.compress(sample)) > 0.9 * len(sample):
            return CODEC_RAW, raw
    packed = zc.compress(raw)
    if len(packed) > 0.9 * len(raw):
        return CODEC_RAW, raw
    return CODEC_ZSTD, packed


def decompress(codec: int, stored: bytes | memoryview, raw_size: int) -> bytes | memoryview:
    """The raw bytes of a stored chunk; ``ValueError`` when they cannot be (a damaged
    frame, or one that holds more than ``raw_size`` bytes)."""
    if codec == CODEC_RAW:
        return stored
    if codec != CODEC_ZSTD:
        raise ValueError(f"unknown codec {codec}")
    try:
        # A damaged header may claim any size, which ``decompress`` would allocate.
        if zstandard.frame_content_size(stored) > raw_size:
            raise ValueError("zstd: the frame claims more bytes than the chunk holds")
        return _decompressor().decompress(stored, max_output_size=raw_size)
    except zstandard.ZstdError as e:
        raise ValueError(f"zstd: {e}") from None
