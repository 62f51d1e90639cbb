"""The byte layouts the store writes: one definition of each.

Owns the encoding of a ``chunks`` row (``Location``: where a chunk's bytes lie), of a
``contents`` row (a file's chunk table), and the names of pack objects; ``meta`` documents
what each row means and its invariants. Decoding a row read back checks what every reader
relies on, so a damaged row is ``Corrupt``, never a read of gigabytes, of the wrong codec or
one that loops. Nothing here reads or writes LMDB or packs.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import blake3

from pfsmount.errors import Corrupt
from pfsmount.store import chunking

_LOC = struct.Struct(">QQIIB")
TABLE_ROW = struct.Struct(">32sQ")  # a chunk digest and the file offset where it ends
EMPTY_DIGEST = blake3.blake3(b"").digest()
_PACK_SUFFIX = ".pack"


class Location(NamedTuple):
    """Where one chunk's stored bytes are: pack, offset, stored and raw sizes, codec."""

    pack: int
    offset: int
    stored: int
    raw: int
    codec: int

    def encode(self) -> bytes:
        return _LOC.pack(*self)

    @classmethod
    def decode(cls, raw: bytes) -> Location:
        return cls(*_LOC.unpack(raw))

    @staticmethod
    def pack_of(raw: bytes) -> int:
        """The pack of an encoded location, without decoding the rest."""
        return int.from_bytes(raw[:8], "big")


def pack_name(pack: int) -> str:
    """The object name of pack number ``pack``."""
    return f"{pack:016x}{_PACK_SUFFIX}"


def pack_number(name: str) -> int | None:
    """The pack an object name names, or None for an object that is not a pack."""
    stem = name.removesuffix(_PACK_SUFFIX)
    if stem == name or len(stem) != 16:
        return None
    try:
        return int(stem, 16)
    except ValueError:
        return None


def checked_location(digest: bytes, raw: bytes) -> Location:
    """Decode a ``chunks`` row and check that it could describe a chunk."""
    where = f"chunk {digest.hex()}"
    if len(raw) != _LOC.size:
        raise Corrupt(f"{where}: its index row is malformed ({len(raw)} bytes)")
    loc = Location.decode(raw)
    if loc.codec not in (chunking.CODEC_RAW, chunking.CODEC_ZSTD):
        raise Corrupt(f"{where}: its index row names unknown codec {loc.codec}")
    if not 0 < loc.raw <= chunking.MAX_CHUNK or not 0 < loc.stored <= loc.raw or (
            loc.codec == chunking.CODEC_RAW and loc.stored != loc.raw):
        raise Corrupt(f"{where}: its index row gives impossible sizes ({loc.stored} stored, "
                      f"{loc.raw} raw)")
    return loc


class ChunkTable(NamedTuple):
    """A file's chunks in order, with each chunk's end offset in the file."""

    digests: list[bytes]
    ends: list[int]

    @property
    def size(self) -> int:
        return self.ends[-1] if self.ends else 0


def table_digests(raw: bytes) -> list[bytes]:
    """The chunk digests of a ``contents`` row, unchecked (garbage collection's fast pass)."""
    step = TABLE_ROW.size
    if len(raw) == step:  # most files are one chunk
        return [raw[:32]]
    return [raw[i : i + 32] for i in range(0, len(raw), step)]


def parse_table(digest: bytes, raw: bytes | memoryview, where: str = "") -> ChunkTable:
    """Decode a ``contents`` row, checking what every read relies on: whole rows, end
    offsets that increase by at most a chunk, one chunk naming the file. A damaged row is
    ``Corrupt`` (its message starting with ``where``), never a read that loops or returns
    what is not in the file."""
    where = where or f"file content {digest.hex()}"
    if len(raw) % TABLE_ROW.size:
        raise Corrupt(f"{where}: its chunk table is malformed ({len(raw)} bytes)")
    digests: list[bytes] = []
    ends: list[int] = []
    previous = 0
    for name, end in TABLE_ROW.iter_unpack(raw):
        if not previous < end <= previous + chunking.MAX_CHUNK:
            raise Corrupt(f"{where}: its chunk table is damaged (a chunk ends at {end} "
                          f"after one at {previous})")
        digests.append(name)
        ends.append(end)
        previous = end
    if (len(digests) == 1 and digests[0] != digest) or (not digests and digest != EMPTY_DIGEST):
        raise Corrupt(f"{where}: its chunk table does not match its name")
    return ChunkTable(digests, ends)
