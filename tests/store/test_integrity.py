"""Integrity of reads on a real store: the right bytes or an error, never anything else.

Damage is made the way a disk or a bug makes it: a byte flipped in a pack file, an index
row overwritten in LMDB. Every read path (``Files.read``, ranges of it, ``copy_to``) must
raise ``Corrupt`` naming the file and commit, promptly; healthy files keep reading right.
"""

from __future__ import annotations

import contextlib
import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pfsmount.errors import Corrupt, PfsError
from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from pfsmount.pfs.fsck import fsck
from pfsmount.store.chunking import CODEC_RAW, CODEC_ZSTD
from pfsmount.store.objects import LocalObjectStore
from pfsmount.store.rows import Location

MIB = 1 << 20
PROJECT = Path(__file__).resolve().parents[2]


def _random(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _text(n: int, seed: int = 2) -> bytes:
    r = random.Random(seed)
    words = [b"apple", b"banana", b"cherry", b"date", b"elder", b"fig", b"grape"]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(r.choices(words, k=12)) + b"\n"
    return bytes(out[:n])


def _store(tmp_path: Path, **files: bytes) -> tuple[Pfs, str]:
    """A store holding ``files`` in one commit of repo ``r``, packs sealed (on disk)."""
    pfs = Pfs(tmp_path / "root")
    pfs.repos.create("r")
    commit = pfs.commits.start("r")
    for name, data in files.items():
        pfs.files.put(f"r@{commit.id}:/{name}", Data(data))
    pfs.commits.finish(f"r@{commit.id}")
    pfs.store.packs.seal()
    return pfs, commit.id


def _chunks(pfs: Pfs, name: str) -> list[tuple[Location, bytes]]:
    _, entry = pfs.files.open(f"r@master:/{name}")
    with pfs.store.meta.read() as txn:
        table = pfs.store.contents.table(txn, entry.ref)
        return [(pfs.store.packs.location(txn, d), d) for d in table.digests]


def _flip(pfs: Pfs, loc: Location, at: int) -> None:
    """Flip one byte of a chunk as stored in its (sealed) pack file."""
    (pack,) = [p for p in (pfs.store.root / "packs").glob("*.pack")
               if int(p.stem, 16) == loc.pack]
    with open(pack, "r+b") as f:
        f.seek(loc.offset + at)
        byte = f.read(1)
        f.seek(loc.offset + at)
        f.write(bytes([byte[0] ^ 0x5A]))


def _read(pfs: Pfs, name: str, offset: int = 0, size: int | None = None) -> bytes:
    commit, entry = pfs.files.open(f"r@master:/{name}")
    return b"".join(pfs.files.read(entry, offset, size, pfs.files.describe(commit, name)))


def _export(pfs: Pfs, name: str, dest: Path) -> int:
    commit, entry = pfs.files.open(f"r@master:/{name}")
    with open(dest, "wb") as f:
        return pfs.files.copy_to(entry, f.fileno(), pfs.files.describe(commit, name))


def _within(seconds: float, fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` in a thread; the exception it raised (None if it returned). A read still
    running after ``seconds`` fails the test: a damaged structure must not make it loop."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"the read still ran after {seconds} s (a loop over damaged metadata?)"
    return outcome[0]


def test_a_flipped_byte_in_a_raw_chunk_fails_every_read_path(tmp_path: Path) -> None:
    data, other = _random(6 * MIB), _random(MIB, seed=5)
    pfs, commit = _store(tmp_path, f=data, other=other)
    try:
        chunks = _chunks(pfs, "f")
        assert len(chunks) > 4 and all(loc.codec == CODEC_RAW for loc, _ in chunks)
        loc, _ = chunks[2]
        _flip(pfs, loc, loc.stored // 2)
        start = sum(c[0].raw for c in chunks[:2])
        where = f"/f in r@{commit}"
        with pytest.raises(Corrupt, match=f"cannot read {where}: chunk .* is damaged"):
            _read(pfs, "f")
        with pytest.raises(Corrupt, match=where):  # a range inside the damaged chunk
            _read(pfs, "f", start + 10, 100)
        with pytest.raises(Corrupt, match=where):
            _export(pfs, "f", tmp_path / "out")
        # What is not damaged reads right: other chunks of the file, other files.
        assert _read(pfs, "f", 0, start) == data[:start]
        assert _read(pfs, "other") == other
        assert "damaged" in "\n".join(fsck(pfs, verify_data=True).errors)
    finally:
        pfs.close()


def test_a_damaged_zstd_chunk_is_an_error_not_short_data(tmp_path: Path) -> None:
    data = _text(3 * MIB)
    pfs, commit = _store(tmp_path, t=data)
    try:
        chunks = _chunks(pfs, "t")
        assert all(loc.codec == CODEC_ZSTD for loc, _ in chunks)
        for i, (loc, _) in enumerate(chunks):  # header, middle, end of different frames
            _flip(pfs, loc, (0, loc.stored // 2, loc.stored - 2)[i % 3])
        for fn in (lambda: _read(pfs, "t"), lambda: _export(pfs, "t", tmp_path / "out"),
                   lambda: _read(pfs, "t", 100, 10)):
            err = _within(10, fn)
            assert isinstance(err, Corrupt) and f"/t in r@{commit}" in str(err), err
    finally:
        pfs.close()


def _damage_contents(pfs: Pfs, name: str, change: Callable[[bytes], bytes]) -> None:
    _, entry = pfs.files.open(f"r@master:/{name}")
    with pfs.store.meta.write() as txn:
        db = pfs.store.meta.db["contents"]
        txn.put(entry.ref, change(bytes(txn.get(entry.ref, db=db) or b"")), db=db)


def _set_end(i: int, end: int) -> Callable[[bytes], bytes]:
    def change(row: bytes) -> bytes:
        at = i * 40 + 32 if i >= 0 else len(row) - 8
        return row[:at] + struct.pack(">Q", end) + row[at + 8:]
    return change


@pytest.mark.parametrize("damage", [
    pytest.param(lambda row: _set_end(-1, struct.unpack(">Q", row[-8:])[0] + 70_000)(row),
                 id="last-end-too-far"),
    pytest.param(_set_end(-1, 1 << 40), id="last-end-huge"),
    pytest.param(_set_end(1, 5), id="ends-decrease"),
    pytest.param(lambda row: row[:-3], id="row-cut-short"),
])
def test_a_damaged_chunk_table_is_an_error_never_a_loop(
        tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    data = _random(4 * MIB)
    pfs, commit = _store(tmp_path, f=data)
    try:
        _damage_contents(pfs, "f", damage)
        pfs.store.contents._tables.clear()  # the row was cached when the file was put
        for fn in (lambda: _read(pfs, "f"), lambda: _read(pfs, "f", 4 * MIB - 10, 1 << 30),
                   lambda: _export(pfs, "f", tmp_path / "out")):
            err = _within(10, fn)
            assert isinstance(err, Corrupt) and f"/f in r@{commit}" in str(err), err
    finally:
        pfs.close()


@pytest.mark.parametrize("field,value", [("stored", (1 << 32) - 1), ("raw", (1 << 32) - 1),
                                         ("codec", 7), ("offset", 1 << 50)])
def test_a_damaged_chunk_location_is_an_error(tmp_path: Path, field: str, value: int) -> None:
    pfs, commit = _store(tmp_path, f=_random(60_000))  # one chunk
    try:
        ((loc, digest),) = _chunks(pfs, "f")
        with pfs.store.meta.write() as txn:
            txn.put(digest, loc._replace(**{field: value}).encode(),
                    db=pfs.store.meta.db["chunks"])
        pfs.store.packs._cache.items.clear()
        err = _within(10, lambda: _read(pfs, "f"))
        assert isinstance(err, Corrupt) and f"/f in r@{commit}" in str(err), err
        assert any("/f" in e for e in fsck(pfs).errors)
    finally:
        pfs.close()


def _pack_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".pack"):
                count += 1
        except OSError:
            pass
    return count


def test_pack_descriptors_stay_bounded_over_many_packs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pfs = Pfs(root, LocalObjectStore(root / "packs", max_open=4))
    try:
        pfs.repos.create("r")
        blobs = {f"f{i}": _random(4096 + i, seed=i) for i in range(45)}
        for name, blob in blobs.items():
            pfs.files.put(f"r@master:/{name}", Data(blob))
            pfs.store.packs.seal()  # one pack each
        assert len(list((root / "packs").glob("*.pack"))) == 45
        pfs.store.packs._cache.items.clear()
        before = _pack_fds()
        for _ in range(2):
            for name, blob in blobs.items():
                assert _read(pfs, name) == blob
                assert _pack_fds() - before <= 4
        assert fsck(pfs, verify_data=True).errors == []
    finally:
        pfs.close()


_OUT_OF_FDS = textwrap.dedent("""
    import os, resource, sys
    from pathlib import Path
    from pfsmount.errors import Corrupt, PfsError
    from pfsmount.pfs import Pfs
    from pfsmount.pfs.fsck import fsck

    pfs = Pfs(Path(sys.argv[1]))
    commit, entry = pfs.files.open("r@master:/f")
    # Every descriptor taken: opening a pack now fails with EMFILE.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    for what, fn in (("read", lambda: b"".join(pfs.files.read(entry))),
                     ("fsck", lambda: fsck(pfs, verify_data=True))):
        try:
            result = fn()
        except Corrupt as e:
            print(what, "corrupt", e)
        except PfsError as e:
            print(what, "error", e)
        else:
            print(what, "ok", getattr(result, "errors", len(result)))
""")


def test_out_of_descriptors_is_a_clear_error_never_damage_or_success(tmp_path: Path) -> None:
    pfs, _ = _store(tmp_path, f=_random(3 * MIB))
    pfs.close()
    p = subprocess.run([sys.executable, "-c", _OUT_OF_FDS, str(tmp_path / "root")],
                       capture_output=True, text=True, timeout=60, cwd=PROJECT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2, p.stdout
    for line in lines:
        _, kind, message = line.split(" ", 2)
        assert kind == "error" and "Too many open files" in message, line


def test_reads_never_return_bytes_outside_the_file(tmp_path: Path) -> None:
    data = _random(3 * MIB)
    pfs, _ = _store(tmp_path, f=data)
    try:
        for offset, size in ((-5, None), (0, -1), (-1, 10)):
            with pytest.raises(PfsError):
                _read(pfs, "f", offset, size)
        assert _read(pfs, "f", len(data) - 5, 100) == data[-5:]
        assert _read(pfs, "f", len(data) + 5, 100) == b""
    finally:
        pfs.close()


def test_a_read_left_unfinished_does_not_pin_the_database(tmp_path: Path) -> None:
    """A client that stops reading a small file (a pager) must not hold an LMDB snapshot:
    pages freed by later writes could not be reused, and the database would grow for as
    long as the client waits."""
    pfs, _ = _store(tmp_path, s=b"small file\n")
    meta = pfs.store.meta

    def growth() -> int:
        before = meta.env.info()["last_pgno"]
        for n in range(200):  # each write frees the pages the one before used
            with meta.write() as txn:
                txn.put(b"scratch", _random(64 << 10, n), db=meta.db["meta"])
        return int(meta.env.info()["last_pgno"] - before)

    idle = growth()
    _, entry = pfs.files.open("r@master:/s")
    pieces = pfs.files.read(entry)
    assert next(pieces) == b"small file\n"  # ... and the reader stops here
    stalled = growth()
    assert b"".join(pieces) == b""
    assert stalled <= idle + 64, (idle, stalled)


def test_a_pack_deleted_while_a_reader_opens_it_is_not_kept_open(tmp_path: Path) -> None:
    """gc deletes a pack while a reader that looked its chunks up earlier is opening it: the
    read still gets its bytes, and afterwards no descriptor keeps the deleted pack's space."""
    store = LocalObjectStore(tmp_path / "packs")
    src = tmp_path / "pack"
    src.write_bytes(b"0123456789" * 1000)
    store.put_file("p.pack", src)
    opened = store._open

    def racing(name: str) -> int:  # the delete lands between the open and its caching
        fd = opened(name)
        store.delete(name)
        return fd

    store._open = racing  # type: ignore[method-assign]
    assert store.get_range("p.pack", 10, 5) == b"01234"
    held = []
    for n in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            held.append(os.readlink(f"/proc/self/fd/{n}"))
    assert not [p for p in held if "p.pack" in p], held
    store.close()
