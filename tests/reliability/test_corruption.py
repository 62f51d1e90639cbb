"""Corruption: damaged packs and a damaged LMDB, read through a real daemon.

A store is built once (files in several commits, each group of files in packs of its own),
then copied and damaged the way a disk does it: bytes flipped in raw and zstd chunks, a pack
truncated (``truncate -s``), a pack deleted, bytes flipped inside the LMDB rows of the chunk
index and the file tables. A daemon then serves the damaged copy, and for every file:

- ``pfsmount file get`` prints the right bytes with exit 0, or fails with exit 10 and one
  ``error:`` line naming the file and the commit, having printed only a prefix of the right
  bytes; ``file get -o`` writes the right file or fails the same way, leaving nothing;
  ``Client.read_file`` returns the right bytes or raises ``Corrupt``;
- no read hangs (every command has a timeout), and the daemon still answers afterwards;
- ``fsck --verify`` names every damaged file (and nothing healthy), and ``fsck --repair``
  drops exactly the damaged files, naming each, after which ``fsck --verify`` is clean and
  every other file reads right.

``CORRUPTIONS`` counts the damages tried in one run.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import re
import resource
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pfsmount import Client
from pfsmount.errors import Corrupt, InvalidArgument, PfsError
from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from pfsmount.store.rows import Location
from tests.conftest import Mounted, Pfsmount, alive, env, require_fuse, short_root

MIB = 1 << 20
TIMEOUT = 60.0  # no read may take longer: a hang is a failure
CORRUPTIONS: list[str] = []  # every damage made, for the count


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _text(n: int, seed: int) -> bytes:
    r = random.Random(seed)
    words = [b"apple", b"banana", b"cherry", b"date", b"elder", b"fig", b"grape", b"kiwi"]
    out = bytearray()
    while len(out) < n:
        out += b",".join(r.choices(words, k=10)) + b"\n"
    return bytes(out[:n])


# Groups of files, each group sealed into packs of its own: (name prefix, count, maker).
GROUPS: dict[str, tuple[int, Callable[[int], bytes]]] = {
    "raw": (8, lambda i: _random(3 * MIB // 2, seed=i)),
    "zst": (8, lambda i: _text(MIB, seed=100 + i)),
    "big": (1, lambda i: _random(14 * MIB, seed=200 + i)),
    "cut": (4, lambda i: _random(MIB, seed=300 + i)),
    "gone": (2, lambda i: _random(MIB // 2, seed=400 + i)),
    "lm": (8, lambda i: _random(MIB, seed=500 + i)),
}


class Template:
    """The undamaged store: where it is, each file's bytes and the commit that added it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, bytes] = {}
        self.commits: dict[str, str] = {}
        self.packs: dict[str, list[Path]] = {}
        self.chunks: dict[str, list[tuple[Location, bytes]]] = {}
        self.head = ""  # what r@master names: reads say they read from it


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    t = Template(tmp_path_factory.mktemp("template"))
    pfs = Pfs(t.root / "store")
    try:
        pfs.repos.create("r")
        for group, (count, make) in GROUPS.items():
            before = set((t.root / "store" / "packs").glob("*.pack"))
            commit = pfs.commits.start("r")
            for i in range(count):
                name = f"{group}{i}"
                t.files[name] = make(i)
                pfs.files.put(f"r@{commit.id}:/{group}/{name}", Data(t.files[name]))
                t.commits[name] = commit.id
            pfs.commits.finish(f"r@{commit.id}")
            pfs.store.packs.seal()
            t.packs[group] = sorted(set((t.root / "store" / "packs").glob("*.pack")) - before)
            t.head = commit.id
        with pfs.store.meta.read() as txn:
            for name in t.files:
                _, entry = pfs.files.open(f"r@master:/{_group(name)}/{name}")
                table = pfs.store.contents.table(txn, entry.ref)
                t.chunks[name] = [(pfs.store.packs.location(txn, d), d) for d in table.digests]
    finally:
        pfs.close()
    yield t


def _group(name: str) -> str:
    return name.rstrip("0123456789")


def _path(name: str) -> str:
    return f"/{_group(name)}/{name}"


def _copy(t: Template) -> Pfsmount:
    daemon = Pfsmount(short_root("pfsc"))
    shutil.rmtree(daemon.root)
    shutil.copytree(t.root, daemon.root)
    return daemon


def _flip(path: Path, offset: int, what: str) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xA5]))
    CORRUPTIONS.append(what)


def _pack(root: Path, loc: Location) -> Path:
    return root / "store" / "packs" / f"{loc.pack:016x}.pack"


def _damage_packs(t: Template, root: Path) -> set[str]:
    """Flip, truncate and delete; returns the files that lost data."""
    rng = random.Random(7)
    damaged: set[str] = set()
    for group in ("raw", "zst"):
        for i in range(6):  # two of each group stay healthy
            name = f"{group}{i}"
            loc, _ = rng.choice(t.chunks[name])
            at = (0, loc.stored // 2, loc.stored - 1, rng.randrange(loc.stored))[i % 4]
            _flip(_pack(root, loc), loc.offset + at, f"{group} chunk byte flip")
            damaged.add(name)
    loc, _ = t.chunks["big0"][-2]  # found after the first bytes went out
    _flip(_pack(root, loc), loc.offset + 7, "late byte flip in a large file")
    damaged.add("big0")
    (cut,) = t.packs["cut"]
    half = cut.stat().st_size // 2
    subprocess.run(["truncate", "-s", str(half), str(root / "store" / "packs" / cut.name)],
                   check=True)
    CORRUPTIONS.append("truncated pack")
    damaged.update(n for n in t.files if _group(n) == "cut"
                   and max(loc.offset + loc.stored for loc, _ in t.chunks[n]) > half)
    for pack in t.packs["gone"]:
        (root / "store" / "packs" / pack.name).unlink()
    CORRUPTIONS.append("deleted pack")
    damaged.update(n for n in t.files if _group(n) == "gone")
    return damaged


def _damage_lmdb(t: Template, root: Path) -> set[str]:
    """Flip random bytes inside the LMDB rows of some files' chunk locations and tables,
    found where they lie in ``data.mdb``; returns the files whose rows were hit."""
    rng = random.Random(11)
    hit: set[str] = set()
    data = root / "store" / "meta" / "data.mdb"
    with open(data, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        for i in range(8):
            name = f"lm{i}"
            if i % 2:  # a chunk's location row
                loc, _ = rng.choice(t.chunks[name])
                value = loc.encode()
                what = "LMDB chunk location flip"
            else:  # the file's chunk table row
                value = b"".join(d + (sum(c[0].raw for c in t.chunks[name][:k + 1]))
                                 .to_bytes(8, "big") for k, (_, d) in enumerate(t.chunks[name]))
                what = "LMDB chunk table flip"
            at = m.find(value)
            assert at >= 0, f"the row of {name} is not in data.mdb"
            m[at + rng.randrange(len(value))] ^= 1 << rng.randrange(8)
            CORRUPTIONS.append(what)
            hit.add(name)
    return hit


def _get(daemon: Pfsmount, t: Template, name: str, damaged: set[str]) -> None:
    """``file get`` of one file: the right bytes, or a clean failure after a right prefix."""
    ref = f"r@master:{_path(name)}"
    p = daemon.call("file", "get", ref, timeout=TIMEOUT)
    err = p.stderr.decode(errors="replace")
    if p.returncode == 0:
        assert p.stdout == t.files[name], f"{name}: exit 0 with wrong bytes"
        assert name not in damaged or name.startswith("lm"), f"{name} is damaged but read"
        return
    assert name in damaged, f"{name} is healthy but: {err}"
    assert t.files[name].startswith(p.stdout), f"{name}: wrong bytes before the error"
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert p.returncode == 10, err
    assert f"{_path(name)} in r@{t.head}" in lines[0], lines[0]


def _get_to_file(daemon: Pfsmount, t: Template, name: str, out: Path) -> None:
    p = daemon.call("file", "get", f"r@master:{_path(name)}", "-o", out, timeout=TIMEOUT)
    if p.returncode == 0:
        assert out.read_bytes() == t.files[name]
        out.unlink()
        return
    err = p.stderr.decode(errors="replace")
    assert len(err.splitlines()) == 1 and p.returncode == 10, err
    assert f"{_path(name)} in r@{t.head}" in err, err
    assert not out.exists() and not list(out.parent.glob(".pfsmount-*")), "a half file was left"


def _client_read(client: Client, t: Template, name: str) -> bool:
    """True when the file read right, False when it failed cleanly."""
    try:
        data = client.read_file(f"r@master:{_path(name)}")
    except Corrupt as e:
        assert f"{_path(name)} in r@{t.head}" in str(e), str(e)
        return False
    assert data == t.files[name], f"{name}: read_file returned wrong bytes"
    return True


def _fsck(daemon: Pfsmount, *flags: str) -> tuple[int, list[str]]:
    p = daemon.call("fsck", *flags, timeout=TIMEOUT)
    assert "Traceback" not in p.stderr.decode(errors="replace")
    return p.returncode, p.stdout.decode(errors="replace").splitlines()


def test_damaged_packs_fail_every_read_cleanly_and_repair_drops_only_them(
        template: Template, tmp_path: Path) -> None:
    daemon = _copy(template)
    try:
        damaged = _damage_packs(template, daemon.root)
        daemon.up()
        for name in sorted(template.files):
            if name in damaged or name.endswith("7"):  # all damaged files, a few healthy
                _get(daemon, template, name, damaged)
        for name in sorted(damaged):  # one of each kind of damage
            if name in ("raw0", "raw1", "zst0", "zst1", "big0", "gone0") or name.startswith("cut"):
                _get_to_file(daemon, template, name, tmp_path / "out" / name)
        with Client(daemon.root, timeout=TIMEOUT) as client:
            failed = {n for n in template.files if not _client_read(client, template, n)}
            assert failed == damaged
            # A range never holds bytes that are not in the file.
            with pytest.raises(InvalidArgument):
                b"".join(client.get_file(f"r@master:{_path('raw7')}", offset=-5))
            with pytest.raises(InvalidArgument):
                b"".join(client.get_file(f"r@master:{_path('raw7')}", offset=1 << 62))
            raw = client.transport.request("GET", "/files/get",
                                           params={"ref": "r@master:/raw/raw7", "offset": -5})
            assert raw.status_code == 400

        code, lines = _fsck(daemon, "--verify")
        assert code == 1
        named = {n for n in template.files if any(f"{_path(n)}:" in line for line in lines)}
        assert named == damaged, "\n".join(lines)

        code, lines = _fsck(daemon, "--repair")
        assert code == 0, "\n".join(lines)
        lost = {line for line in lines if line.startswith("lost: ")}
        assert lost == {f"lost: {_path(n)} in r@{template.commits[n]}" for n in damaged} | {
            f"lost: {_path(n)} in r@{c}" for n in damaged for c in _later(template, n)}
        assert _fsck(daemon, "--verify")[0] == 0
        with Client(daemon.root, timeout=TIMEOUT) as client:
            for name, data in template.files.items():
                if name in damaged:
                    with pytest.raises(PfsError, match="not found"):
                        client.read_file(f"r@master:{_path(name)}")
                else:
                    assert client.read_file(f"r@master:{_path(name)}") == data
        daemon.teardown()  # fsck clean, down clean, no traceback in the log
    finally:
        daemon.cleanup()


def _later(t: Template, name: str) -> set[str]:
    """The commits after the one that added ``name``: they hold it too."""
    order = list(dict.fromkeys(t.commits.values()))
    return set(order[order.index(t.commits[name]) + 1:])


def test_damaged_lmdb_rows_fail_reads_cleanly_never_hang(template: Template) -> None:
    daemon = _copy(template)
    try:
        hit = _damage_lmdb(template, daemon.root)
        daemon.up()
        for name in sorted(hit):
            _get(daemon, template, name, hit)
        with Client(daemon.root, timeout=TIMEOUT) as client:
            failed = {n for n in template.files if not _client_read(client, template, n)}
        assert failed <= hit
        code, lines = _fsck(daemon, "--verify")
        named = {n for n in template.files if any(_path(n) in line for line in lines)}
        assert failed <= named, "\n".join(lines)
        assert code == (1 if named else 0)
        daemon.call("fsck", "--repair", timeout=TIMEOUT)
        daemon.teardown()
    finally:
        daemon.cleanup()


def test_many_packs_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    """``ulimit -n 64`` and 45 packs: gets, ``fsck --verify`` and new connections work."""
    daemon = Pfsmount(short_root("pfsn"))
    files = {f"f{i}": _random(5000 + i, seed=i) for i in range(45)}
    pfs = Pfs(daemon.root / "store")
    try:
        pfs.repos.create("r")
        for name, data in files.items():
            pfs.files.put(f"r@master:/{name}", Data(data))
            pfs.store.packs.seal()
    finally:
        pfs.close()
    assert len(list((daemon.root / "store" / "packs").glob("*.pack"))) == 45

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    try:
        p = subprocess.run(daemon.argv("up", "--no-mount"), capture_output=True, timeout=90,
                           env=env(), preexec_fn=low_limit)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        pid = int(re.findall(rb"\(pid (\d+)\)", p.stdout)[0])
        daemon.pids.add(pid)
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert re.search(r"Max open files\s+64\s", limits), limits
        for name in ("f0", "f22", "f44"):  # the command, as a user runs it
            assert daemon.get("file", "get", f"r@master:/{name}") == files[name]
        for _ in range(2):  # every pack, twice, each read on a new connection
            for name, data in files.items():
                with Client(daemon.root, timeout=TIMEOUT) as client:
                    assert client.read_file(f"r@master:/{name}") == data
        code, lines = _fsck(daemon, "--verify")
        assert code == 0 and "0 errors" in lines[-1], "\n".join(lines)
        assert json.loads(daemon.ok("status", "--json"))["pid"] == pid
        daemon.teardown()
    finally:
        daemon.cleanup()


def test_the_mount_answers_eio_for_damage_and_right_bytes_otherwise(template: Template) -> None:
    """``cat`` through the FUSE mount: a damaged file is an I/O error, never wrong bytes."""
    require_fuse("CI must run the corruption suite with a mount", "pyfuse3")
    daemon = Mounted("pfscm")
    try:
        shutil.copytree(template.root / "store", daemon.root / "store")
        damaged = _damage_packs(template, daemon.root)
        daemon.up()
        base = daemon.mnt / "r" / "master"
        for name in ("raw0", "zst1", "big0", "gone0", "raw7", "zst7"):
            p = subprocess.run(["cat", str(base / _path(name).lstrip("/"))],
                               capture_output=True, timeout=TIMEOUT)
            if name in damaged:
                assert p.returncode != 0, f"cat {name} succeeded on damaged data"
                assert b"Input/output error" in p.stderr, p.stderr
                assert template.files[name].startswith(p.stdout)
            else:
                assert p.returncode == 0 and p.stdout == template.files[name]
        assert alive(daemon.pid or 0) and os.path.ismount(daemon.mnt)
        daemon.call("fsck", "--repair", timeout=TIMEOUT)
        daemon.teardown()
    finally:
        daemon.cleanup()


@pytest.mark.parametrize("seed", [1, 2])
def test_random_lmdb_flips_never_give_wrong_bytes_or_hang(template: Template, seed: int) -> None:
    """Bytes flipped anywhere in ``data.mdb``: the daemon starts (or refuses in one line);
    every read is right or a clean failure; it is still up afterwards."""
    daemon = _copy(template)
    try:
        rng = random.Random(seed)
        data = daemon.root / "store" / "meta" / "data.mdb"
        with open(data, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            for _ in range(30):
                m[rng.randrange(len(m))] ^= 1 << rng.randrange(8)
                CORRUPTIONS.append("random LMDB byte flip")
        p = daemon.call("up", "--no-mount", timeout=90)
        if p.returncode != 0:
            assert len(p.stderr.splitlines()) == 1 and b"Traceback" not in p.stderr, p.stderr
            return
        daemon.pids.add(int(re.findall(rb"\(pid (\d+)\)", p.stdout)[0]))
        for name in sorted(template.files)[::4]:
            r = daemon.call("file", "get", f"r@master:{_path(name)}", timeout=TIMEOUT)
            if r.returncode == 0:
                assert r.stdout == template.files[name], f"{name}: exit 0 with wrong bytes"
            else:
                assert template.files[name].startswith(r.stdout)
                assert len(r.stderr.splitlines()) == 1 and b"Traceback" not in r.stderr
        r = daemon.call("fsck", "--verify", timeout=TIMEOUT)
        assert b"Traceback" not in r.stderr
        assert daemon.call("status").returncode == 0, "the daemon did not survive"
        daemon.down()
    finally:
        daemon.cleanup()
