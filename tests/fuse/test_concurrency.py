"""Several processes on one branch at once, and readers of a finished commit meanwhile.

Writers are separate processes (as separate programs would be), each writing its own files
into one branch, some into shared directories they all create with ``mkdir -p``. Readers
re-read a finished commit in a loop while the writers change the branch it came from; every
read must give the sealed bytes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fuse.conftest import Mount

WRITERS = 4
FILES_PER_WRITER = 40
SEALED_FILES = 30

COMMON = textwrap.dedent("""
    import hashlib, os, sys

    def content(name):
        seed = hashlib.sha256(name.encode()).digest()
        return (seed * (1 + len(name) * 97 % 2000))[: 1 + len(name) * 7919 % 60000]
""")

WRITER = COMMON + textwrap.dedent("""
    root, me, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(count):
        sub = ("shared/x" if i % 2 else "shared/y") if i % 3 else me
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        name = f"{sub}/{me}-{i:03d}"
        with open(os.path.join(root, name), "wb") as f:
            data = content(name)
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            f.write(data[half:])
        # Now and then, reopen the stored file and rewrite its head in place.
        if i % 5 == 4:
            with open(os.path.join(root, name), "r+b") as f:
                f.write(content(name)[:10])
""")

READER = COMMON + textwrap.dedent("""
    root, names, stop = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    rounds = bad = 0
    while not os.path.exists(stop) or rounds < 3:
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                if f.read() != content(name):
                    bad += 1
        if sorted(os.listdir(root)) != sorted({n.split("/")[0] for n in names}):
            bad += 1
        rounds += 1
    print(rounds, bad)
""")


def content(name: str) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (1 + len(name) * 97 % 2000))[: 1 + len(name) * 7919 % 60000]


def test_writers_on_one_branch_and_readers_of_a_sealed_commit(mount: Mount,
                                                              tmp_path: Path) -> None:
    repo = mount.new_repo("conc")
    br = mount.branch(repo)
    sealed_names = [f"sealed/s{i:02d}" if i % 2 else f"s{i:02d}" for i in range(SEALED_FILES)]
    (br / "sealed").mkdir()
    for name in sealed_names:
        (br / name).write_bytes(content(name))
    cid = mount.finish(f"{repo}@master")
    sealed = mount.mnt / repo / cid
    stop = tmp_path / "stop"

    readers = [
        subprocess.Popen([sys.executable, "-c", READER, str(view), ",".join(sealed_names),
                          str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for view in (sealed, sealed)
    ]
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(br), f"w{n}",
                          str(FILES_PER_WRITER)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for n in range(WRITERS)
    ]
    try:
        for w in writers:
            out, err = w.communicate(timeout=150)
            assert w.returncode == 0, err
    finally:
        stop.touch()
        for w in writers:
            if w.poll() is None:
                w.kill()
    for r in readers:
        out, err = r.communicate(timeout=60)
        assert r.returncode == 0, err
        rounds, bad = map(int, out.split())
        assert rounds >= 3 and bad == 0, f"reader saw {bad} wrong reads in {rounds} rounds"

    expected = {f"{sub}/w{n}-{i:03d}"
                for n in range(WRITERS) for i in range(FILES_PER_WRITER)
                for sub in [("shared/x" if i % 2 else "shared/y") if i % 3 else f"w{n}"]}
    expected |= set(sealed_names)
    found = {str(p.relative_to(br)) for p in br.rglob("*") if p.is_file()}
    assert found == expected
    for name in sorted(expected):
        assert (br / name).read_bytes() == content(name), name
    # What the mount shows is what was stored, and it seals in one commit.
    second = mount.finish(f"{repo}@master")
    with mount.api() as c:
        stored = {f.path.lstrip("/") for f in c.walk_files(f"{repo}@{second}")}
        assert stored == expected
        for name in sorted(expected)[::7]:
            assert c.read_file(f"{repo}@{second}:/{name}") == content(name)
    assert sorted(os.listdir(sealed)) == ["s00", "s02", "s04", "s06", "s08", "s10", "s12",
                                          "s14", "s16", "s18", "s20", "s22", "s24", "s26",
                                          "s28", "sealed"]


def test_two_branches_written_at_once(mount: Mount) -> None:
    """Writers on different branches of one repo do not see each other's files."""
    repo = mount.new_repo("twob")
    with mount.api() as c:
        c.create_branch(repo, "dev")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(mount.branch(repo, b)), b, "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for b in ("master", "dev")
    ]
    for p in procs:
        _, err = p.communicate(timeout=150)
        assert p.returncode == 0, err
    for b, other in (("master", "dev"), ("dev", "master")):
        names = {str(p.relative_to(mount.branch(repo, b)))
                 for p in mount.branch(repo, b).rglob("*") if p.is_file()}
        assert len(names) == 20
        assert all(os.path.basename(n).startswith(b) for n in names), names
        assert not any(os.path.basename(n).startswith(other) for n in names)
        for n in names:
            assert (mount.branch(repo, b) / n).read_bytes() == content(n)


def test_writes_while_a_close_stores_the_file_are_kept(mount: Mount) -> None:
    """A write that lands while a close is storing a big file is stored too, by the next
    close, and never overtaken by the older version."""
    repo = mount.new_repo("fsrace")
    path = mount.branch(repo) / "big"
    base = os.urandom(16 << 20)  # stored in a worker thread: long enough to race
    for round_ in range(10):
        marker = f"round {round_:02d} ".encode() * 256
        a = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        os.write(a, base)
        b = os.open(path, os.O_RDWR)
        closing = threading.Thread(target=os.close, args=(a,))  # stores the file
        closing.start()
        time.sleep(0.003 * round_)  # land at different moments of that store
        os.pwrite(b, marker, 4096)
        os.close(b)  # the marker must be stored, now or after the first store
        closing.join()
        expected = base[:4096] + marker + base[4096 + len(marker):]
        assert path.read_bytes() == expected
        mount.finish(f"{repo}@master")
        assert hashlib.sha256(mount.get(f"{repo}@master:/big")).digest() == \
            hashlib.sha256(expected).digest(), f"round {round_}: the marker was lost"


def test_gc_while_programs_write_through_the_mount(mount: Mount) -> None:
    """gc pauses writes to the store while it runs; files written meanwhile all land whole,
    and what it frees is only a deleted repo's."""
    trash = mount.new_repo("gctrash")
    mount.put(f"{trash}@master:/junk", os.urandom(3 << 20))
    with mount.api() as c:
        c.delete_repo(trash)
    repo = mount.new_repo("gcw")
    br = mount.branch(repo)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(br), f"w{n}",
                          str(FILES_PER_WRITER)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    # Files past 256 KiB are stored by a worker thread, small ones on the FUSE thread: gc
    # must not leave one waiting for the other.
    big = {f"big/b{i}": os.urandom((1 << 20) + i) for i in range(8)}
    (br / "big").mkdir()

    def write_big() -> None:
        for name, data in big.items():
            (br / name).write_bytes(data)

    big_writer = threading.Thread(target=write_big)
    big_writer.start()
    collections = 0
    freed_contents = 0
    try:
        with mount.api() as c:
            while (any(w.poll() is None for w in writers) or big_writer.is_alive()
                   or not collections):
                report = c.gc(wait=30)
                collections += 1
                freed_contents += report.contents
    finally:
        big_writer.join(timeout=150)
        for w in writers:
            _, err = w.communicate(timeout=150)
            assert w.returncode == 0, err
    assert collections >= 2 and freed_contents >= 1
    expected = {f"{sub}/w{n}-{i:03d}"
                for n in range(2) for i in range(FILES_PER_WRITER)
                for sub in [("shared/x" if i % 2 else "shared/y") if i % 3 else f"w{n}"]}
    cid = mount.finish(f"{repo}@master")
    sealed = mount.mnt / repo / cid
    found = {str(p.relative_to(sealed)) for p in sealed.rglob("*") if p.is_file()}
    assert found == expected | set(big)
    for name in sorted(expected):
        assert (sealed / name).read_bytes() == content(name), name
    for name, data in big.items():
        assert (sealed / name).read_bytes() == data, name
