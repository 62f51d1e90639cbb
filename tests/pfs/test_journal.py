"""The staging journal: staged files land in one transaction, and survive a daemon crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from pfsmount.pfs import Pfs
from pfsmount.pfs.fsck import fsck
from pfsmount.store import KIND_FILE, Entry, WriteBatch


def stage(pfs: Pfs, path: str, data: bytes) -> None:
    batch = WriteBatch()
    content = pfs.store.contents.write_bytes(batch, data)
    entry = Entry(KIND_FILE, content.size, 0o644, 0, content.digest)
    pfs.journal.stage("data@master", path, entry, batch)


def read(pfs: Pfs, ref: str) -> bytes:
    _, entry = pfs.files.open(ref)
    return b"".join(pfs.files.read(entry))


def test_staged_files_appear_on_flush_in_one_commit(pfs: Pfs) -> None:
    pfs.repos.create("data")
    for i in range(50):
        stage(pfs, f"d/f{i}", f"file {i}".encode())
    assert pfs.journal.pending() == 50
    assert pfs.commits.list("data") == []  # nothing in LMDB before the flush
    pfs.journal.flush()
    assert pfs.journal.pending() == 0
    [commit] = pfs.commits.list("data")
    assert commit.is_open
    assert read(pfs, "data@master:/d/f7") == b"file 7"
    assert len(list(pfs.files.list("data@master:/d"))) == 50


def test_the_last_staged_write_of_a_path_wins(pfs: Pfs) -> None:
    pfs.repos.create("data")
    stage(pfs, "f", b"one")
    stage(pfs, "f", b"two")
    pfs.journal.flush()
    assert read(pfs, "data@master:/f") == b"two"


def test_staged_files_survive_a_killed_process(tmp_path: Path) -> None:
    root = tmp_path / "root"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from pfsmount.pfs import Pfs
        from pfsmount.store import KIND_FILE, Entry, WriteBatch
        pfs = Pfs(Path({str(root)!r}))
        pfs.repos.create("data")
        for i in range(20):
            batch = WriteBatch()
            c = pfs.store.contents.write_bytes(batch, b"x" * i + b"!")
            pfs.journal.stage("data@master", f"f{{i}}", Entry(KIND_FILE, c.size, 0o644, 0,
                              c.digest), batch)
        os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd())
    assert proc.returncode == -9
    assert (root / "journal").stat().st_size > 0
    pfs = Pfs(root)
    try:
        assert read(pfs, "data@master:/f19") == b"x" * 19 + b"!"
        assert len(list(pfs.files.list("data@master"))) == 20
        assert not (root / "journal").exists() or (root / "journal").stat().st_size == 0
        assert fsck(pfs, verify_data=True).errors == []
    finally:
        pfs.close()


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pfs = Pfs(root)
    pfs.repos.create("data")
    stage(pfs, "kept", b"kept")
    with open(root / "journal", "ab") as f:
        f.write(b"\x00\x00\x01\x00garbage")  # a record cut short by a crash
    os.close(pfs.journal._fd)  # simulate the daemon dying: nothing flushed
    pfs.store.close()
    pfs = Pfs(root)
    try:
        assert read(pfs, "data@master:/kept") == b"kept"
        assert fsck(pfs).errors == []
    finally:
        pfs.close()
