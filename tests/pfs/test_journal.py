"""The staging journal: staged files land in one transaction, and survive a daemon crash."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pfsmount.errors import StoreFull
from pfsmount.pfs import Pfs
from pfsmount.pfs.fsck import fsck
from pfsmount.store import KIND_FILE, MKDIR, Entry, WriteBatch


def stage(pfs: Pfs, path: str, data: bytes) -> None:
    batch = WriteBatch()
    content = pfs.store.contents.write_bytes(batch, data)
    entry = Entry(KIND_FILE, content.size, 0o644, 0, content.digest)
    pfs.journal.stage("data@master", path, entry, batch)


def segments(root: Path) -> list[Path]:
    return sorted(root.glob("journal*"))


def read(pfs: Pfs, ref: str) -> bytes:
    _, entry = pfs.files.open(ref)
    return b"".join(pfs.files.read(entry))


def test_staged_files_appear_on_flush_in_one_commit(pfs: Pfs) -> None:
    pfs.repos.create("data")
    for i in range(50):
        stage(pfs, f"d/f{i}", f"file {i}".encode())
    assert pfs.journal.pending() == 50
    assert pfs.direct.commits.list("data") == []  # nothing in LMDB before the flush
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
    assert sum(p.stat().st_size for p in segments(root)) > 0
    pfs = Pfs(root)
    try:
        assert read(pfs, "data@master:/f19") == b"x" * 19 + b"!"
        assert len(list(pfs.files.list("data@master"))) == 20
        assert sum(p.stat().st_size for p in segments(root)) == 0
        assert fsck(pfs, verify_data=True).errors == []
    finally:
        pfs.close()


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pfs = Pfs(root)
    pfs.repos.create("data")
    stage(pfs, "kept", b"kept")
    [segment] = segments(root)
    with open(segment, "ab") as f:
        f.write(b"\x00\x00\x01\x00garbage")  # a record cut short by a crash
    os.close(pfs.journal._fd)  # simulate the daemon dying: nothing flushed
    pfs.store.close()
    pfs = Pfs(root)
    try:
        assert read(pfs, "data@master:/kept") == b"kept"
        assert fsck(pfs).errors == []
    finally:
        pfs.close()


def test_staging_does_not_wait_for_a_flush_in_progress(pfs: Pfs,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A close through the mount stages its file while the flusher commits earlier ones."""
    pfs.repos.create("data")
    stage(pfs, "first", b"1")
    applying, release = threading.Event(), threading.Event()
    apply = pfs.direct.files.apply

    def slow_apply(*args: Any, **kwargs: Any) -> Any:
        applying.set()
        release.wait(10)
        return apply(*args, **kwargs)

    monkeypatch.setattr(pfs.direct.files, "apply", slow_apply)
    flusher = threading.Thread(target=pfs.journal.flush)
    flusher.start()
    try:
        assert applying.wait(10)
        started = time.monotonic()
        stage(pfs, "second", b"2")
        assert time.monotonic() - started < 1
        assert pfs.journal.pending() == 2  # one being applied, one staged after
    finally:
        release.set()
        flusher.join()
    assert pfs.journal.pending() == 1
    assert read(pfs, "data@master:/first") == b"1"
    assert read(pfs, "data@master:/second") == b"2"  # the read applied it (the barrier)


def test_a_flush_that_dies_leaves_its_records_for_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records staged while a flush was applying older ones go to a newer segment; after a
    crash both are replayed, the older first, so the newest version of a file wins."""
    root = tmp_path / "root"
    pfs = Pfs(root)
    pfs.repos.create("data")
    stage(pfs, "a", b"old")
    applying, release = threading.Event(), threading.Event()

    def dying_apply(*args: Any, **kwargs: Any) -> Any:
        applying.set()
        release.wait(10)
        raise RuntimeError("the daemon died here")

    monkeypatch.setattr(pfs.direct.files, "apply", dying_apply)

    def flush() -> None:
        with contextlib.suppress(RuntimeError):
            pfs.journal.flush()

    flusher = threading.Thread(target=flush)
    flusher.start()
    assert applying.wait(10)
    stage(pfs, "a", b"new")
    stage(pfs, "b", b"b")
    release.set()
    flusher.join()
    assert len(segments(root)) == 2
    os.close(pfs.journal._fd)  # the daemon is gone: nothing else flushed
    pfs.store.close()
    pfs = Pfs(root)
    try:
        assert read(pfs, "data@master:/a") == b"new"
        assert read(pfs, "data@master:/b") == b"b"
        assert fsck(pfs).errors == []
    finally:
        pfs.close()
    assert segments(root) == []


def test_a_staged_directory_lands_with_the_files_staged_in_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pfs = Pfs(root)
    pfs.repos.create("data")
    pfs.journal.stage("data@master", "empty", MKDIR)
    pfs.journal.stage("data@master", "d", MKDIR)
    stage(pfs, "d/f", b"in a new directory")
    os.close(pfs.journal._fd)  # the daemon dies before any flush
    pfs.store.close()
    pfs = Pfs(root)
    try:
        listed = {(f.path, f.type) for f in pfs.files.list("data@master:/")}
        assert listed == {("/empty", "dir"), ("/d", "dir")}
        assert read(pfs, "data@master:/d/f") == b"in a new directory"
    finally:
        pfs.close()


def test_a_staged_file_that_cannot_land_does_not_drop_the_others(pfs: Pfs) -> None:
    pfs.repos.create("data")
    stage(pfs, "a", b"a file")
    pfs.journal.flush()
    stage(pfs, "before", b"1")
    stage(pfs, "a/below", b"cannot land: a is a file")
    stage(pfs, "after", b"2")
    pfs.journal.flush()
    assert read(pfs, "data@master:/before") == b"1"
    assert read(pfs, "data@master:/after") == b"2"
    assert read(pfs, "data@master:/a") == b"a file"
    assert pfs.journal.pending() == 0


def test_staged_files_wait_for_space_instead_of_being_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush that finds the store's disk full keeps every record (the writers were told
    their files were saved): the next flush applies them, and so does a restart."""
    root = tmp_path / "root"
    pfs = Pfs(root)
    pfs.repos.create("data")
    pfs.repos.create("other")
    real = pfs.direct.files.apply

    def full(*args: Any, **kw: Any) -> Any:
        raise StoreFull.under(root)

    monkeypatch.setattr(pfs.direct.files, "apply", full)
    stage(pfs, "a", b"one")
    pfs.journal.stage("other@master", "b", *_entry(pfs, b"two"))
    with pytest.raises(StoreFull):
        pfs.journal.flush()
    assert pfs.journal.pending() == 2
    stage(pfs, "a", b"three")  # staged meanwhile: lands after, and wins
    with pytest.raises(StoreFull):
        pfs.journal.flush()
    monkeypatch.setattr(pfs.direct.files, "apply", real)
    os.close(pfs.journal._fd)  # the daemon dies before space comes back
    pfs.store.close()
    pfs = Pfs(root)
    try:
        assert read(pfs, "data@master:/a") == b"three"
        assert read(pfs, "other@master:/b") == b"two"
        assert sum(p.stat().st_size for p in segments(root)) == 0
        assert fsck(pfs, verify_data=True).errors == []
    finally:
        pfs.close()


def test_a_flush_that_fails_for_space_applies_later(pfs: Pfs,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pfs.repos.create("data")
    real = pfs.direct.files.apply
    calls = 0

    def full_once(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreFull.under(pfs.store.root)
        return real(*args, **kw)

    monkeypatch.setattr(pfs.direct.files, "apply", full_once)
    stage(pfs, "a", b"one")
    with pytest.raises(StoreFull):
        pfs.journal.flush()
    stage(pfs, "b", b"two")
    pfs.journal.flush()
    assert read(pfs, "data@master:/a") == b"one"
    assert read(pfs, "data@master:/b") == b"two"
    assert pfs.journal.pending() == 0
    assert [p for p in segments(pfs.journal.path.parent) if p.stat().st_size] == []


def _entry(pfs: Pfs, data: bytes) -> tuple[Entry, WriteBatch]:
    batch = WriteBatch()
    content = pfs.store.contents.write_bytes(batch, data)
    return Entry(KIND_FILE, content.size, 0o644, 0, content.digest), batch
