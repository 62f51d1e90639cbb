"""The journal barrier is the model's: a file the mount closed (staged in the journal, not yet
in LMDB) is seen by every operation that names its branch, called in-process as much as
over the API, and an operation called from the thread applying it passes straight on."""

from __future__ import annotations

import threading
from pathlib import Path

from pfsmount.pfs import Event, Pfs
from pfsmount.pfs.fsck import fsck
from pfsmount.pfs.system import BARRIERED
from pfsmount.store import KIND_FILE, Entry, WriteBatch


def close_in_mount(pfs: Pfs, ref: str, path: str, data: bytes) -> None:
    """What the mount does when a written file is closed: its chunks go to a pack, and one
    record to the journal; LMDB is left to the next flush."""
    batch = WriteBatch()
    content = pfs.store.contents.write_bytes(batch, data)
    pfs.journal.stage(ref, path, Entry(KIND_FILE, content.size, 0o644, 0, content.digest),
                      batch)


def test_every_operation_sees_a_file_the_mount_closed(pfs: Pfs) -> None:
    pfs.repos.create("data")
    close_in_mount(pfs, "data@master", "sales", b"apple 4\n")
    assert pfs.direct.commits.list("data") == []  # beneath the barrier: not yet in LMDB
    [commit] = pfs.commits.list("data")  # the branch's first write opened a commit
    assert commit.is_open and pfs.journal.pending() == 0

    close_in_mount(pfs, "data@master", "more/pears", b"pear 2\n")
    walked = pfs.files.walk("data@master")  # a stream: the barrier runs when it is read
    close_in_mount(pfs, "data@master", "more/plums", b"plum 1\n")
    assert [f.path for f in walked] == ["/more/pears", "/more/plums", "/sales"]
    _, entry = pfs.files.open("data@master:/more/plums")
    assert b"".join(pfs.files.read(entry)) == b"plum 1\n"

    close_in_mount(pfs, "data@master", "sales", b"apple 5\n")
    finished = pfs.commits.finish("data@master")  # seals what was closed before it
    _, entry = pfs.files.open(f"data@{finished.id}:/sales")
    assert b"".join(pfs.files.read(entry)) == b"apple 5\n"
    assert pfs.files.inspect("data@master:/sales").size == len(b"apple 5\n")


def test_a_listener_of_the_flush_reads_the_model_without_waiting_for_itself(
        tmp_path: Path) -> None:
    pfs = Pfs(tmp_path / "root")  # not the fixture: a flush stuck on itself could not close
    pfs.repos.create("data")
    seen: list[int] = []

    def listener(event: Event) -> None:
        if event.kind == "files_changed" and threading.current_thread() is flusher:
            seen.append(pfs.files.inspect("data@master:/f").size)  # in the flush's thread

    pfs.events.subscribe(listener)
    close_in_mount(pfs, "data@master", "f", b"12345")
    flusher = threading.Thread(target=pfs.barrier, daemon=True)
    flusher.start()
    flusher.join(10)
    assert not flusher.is_alive(), "the flush waited for itself"
    assert seen == [5]
    assert fsck(pfs, verify_data=True).errors == []
    pfs.close()


def test_every_operation_is_behind_the_barrier_or_takes_what_its_caller_holds(pfs: Pfs) -> None:
    """A new operation is placed on purpose: behind the barrier if it names a branch or
    commit (``system.BARRIERED``), or among these, which read what the caller holds (an
    entry, a transaction, a batch) and may run inside a write transaction."""
    beneath = {
        type(part).__name__: {n for n in dir(part) if not n.startswith("_")
                              and callable(getattr(part, n))} - BARRIERED[type(part)]
        for part in pfs.direct
    }
    assert beneath == {
        "Repos": {"readers"},
        "Commits": {"open_locked", "finish_locked", "writable_locked"},
        "Files": {"check_writable", "ingest_tree", "space", "read_failed", "leaving", "read",
                  "copy_to", "describe"},
    }
