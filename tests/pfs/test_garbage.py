"""gc: what no commit reaches goes, with its packs; everything reachable stays readable."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import lmdb
import pytest

from pfsmount.errors import Conflict, StoreFull
from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from pfsmount.pfs.fsck import fsck
from pfsmount.pfs.garbage import collect
from pfsmount.pfs.model import GcReport
from pfsmount.store import KIND_FILE, Entry, WriteBatch
from pfsmount.store import packs as packs_module
from pfsmount.store.rows import Location

MIB = 1 << 20


@pytest.fixture(autouse=True)
def small_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs of 1 MiB, so that a few MiB of data spans several of them."""
    monkeypatch.setattr(packs_module, "PACK_TARGET", MIB)


def put(pfs: Pfs, ref: str, data: bytes) -> None:
    pfs.files.put(ref, Data(data))


def read(pfs: Pfs, ref: str) -> bytes:
    _, entry = pfs.files.open(ref)
    return b"".join(pfs.files.read(entry))


def stored_bytes(pfs: Pfs) -> int:
    return sum(pfs.store.objects.size(n) or 0 for n in pfs.store.objects.list())


def seal(pfs: Pfs) -> None:
    """Seal the open pack, as a busy daemon does every 64 MiB."""
    pfs.store.packs.seal()


def test_a_deleted_repo_gives_its_packs_back_and_the_rest_reads_the_same(pfs: Pfs) -> None:
    keep = os.urandom(3 * MIB)
    pfs.repos.create("kept")
    put(pfs, "kept@master:/a", keep)
    seal(pfs)
    pfs.repos.create("gone")
    for i in range(4):
        put(pfs, f"gone@master:/f{i}", os.urandom(MIB))
    seal(pfs)
    before = stored_bytes(pfs)
    pfs.repos.delete("gone")

    report = collect(pfs)

    assert report.packs >= 3 and report.freed >= 3 * MIB
    assert report.contents == 4 and report.chunks > 0 and report.pages > 0
    assert stored_bytes(pfs) == before - report.freed
    assert read(pfs, "kept@master:/a") == keep
    assert fsck(pfs, verify_data=True).errors == []
    again = collect(pfs)
    assert (again.pages, again.contents, again.chunks, again.packs) == (0, 0, 0, 0)


def test_content_a_deleted_repo_shared_stays(pfs: Pfs) -> None:
    shared = os.urandom(2 * MIB)
    pfs.repos.create("a")
    pfs.repos.create("b")
    put(pfs, "a@master:/x", shared)
    put(pfs, "b@master:/y", shared)  # stored once
    seal(pfs)
    pfs.repos.delete("a")
    report = collect(pfs)
    assert (report.contents, report.chunks, report.packs) == (0, 0, 0)
    assert read(pfs, "b@master:/y") == shared


def test_history_is_live(pfs: Pfs) -> None:
    """Every commit counts, not just branch heads: old versions stay readable."""
    pfs.repos.create("data")
    old = os.urandom(MIB)
    put(pfs, "data@master:/f", old)
    first = pfs.commits.list("data")[0].id
    put(pfs, "data@master:/f", b"new")
    seal(pfs)
    report = collect(pfs)
    assert (report.contents, report.chunks, report.packs) == (0, 0, 0)
    assert read(pfs, f"data@{first}:/f") == old


def test_the_open_pack_goes_too_when_all_it_holds_is_garbage(pfs: Pfs) -> None:
    pfs.repos.create("gone")
    put(pfs, "gone@master:/f", os.urandom(MIB // 2))  # less than a pack: still open
    pfs.repos.delete("gone")
    report = collect(pfs)
    assert report.packs == 1 and report.freed >= MIB // 2
    assert stored_bytes(pfs) == 0


def test_a_dry_run_changes_nothing_and_predicts_the_run(pfs: Pfs) -> None:
    pfs.repos.create("gone")
    put(pfs, "gone@master:/f", os.urandom(2 * MIB))
    seal(pfs)
    pfs.repos.delete("gone")
    before = stored_bytes(pfs)
    dry = collect(pfs, dry_run=True)
    assert dry.dry_run and dry.packs > 0
    assert stored_bytes(pfs) == before
    real = collect(pfs)
    assert (real.pages, real.contents, real.chunks, real.packs, real.freed) == (
        dry.pages, dry.contents, dry.chunks, dry.packs, dry.freed)


def test_entries_a_root_provider_names_stay(pfs: Pfs) -> None:
    """The scheduler registers its remembered datum outputs, which no commit may hold."""
    pfs.repos.create("data")
    data = os.urandom(MIB)
    put(pfs, "data@master:/f", data)
    _, entry = pfs.files.open("data@master:/f")
    seal(pfs)
    pfs.repos.delete("data")

    def provider(txn: lmdb.Transaction) -> Iterable[Entry]:
        return [entry]

    pfs.gc_roots.append(provider)
    assert collect(pfs).contents == 0
    assert b"".join(pfs.files.read(entry)) == data
    pfs.gc_roots.remove(provider)
    assert collect(pfs).contents == 1


def test_files_staged_in_the_journal_are_live(pfs: Pfs) -> None:
    """Files the mount closed reach LMDB only at the next flush: gc flushes first."""
    pfs.repos.create("data")
    batch = WriteBatch()
    content = pfs.store.contents.write_bytes(batch, b"closed in the mount")
    pfs.journal.stage("data@master", "f", Entry(KIND_FILE, content.size, 0o644, 0,
                                                content.digest), batch)
    del batch
    report = collect(pfs)
    assert (report.contents, report.chunks) == (0, 0)
    assert read(pfs, "data@master:/f") == b"closed in the mount"


def test_gc_waits_for_a_write_in_progress_and_gives_up_clearly(pfs: Pfs) -> None:
    pfs.repos.create("data")
    batch = WriteBatch()
    pfs.store.contents.write_bytes(batch, b"half way through a put")  # not yet committed
    with pytest.raises(Conflict, match="still in progress"):
        collect(pfs, wait=0.2)
    del batch  # the put failed and went away: its chunks are garbage
    report = collect(pfs, wait=5)
    assert report.chunks == 0  # never indexed, so nothing to drop from the index


def test_a_write_reusing_garbage_keeps_it_though_gc_starts_meanwhile(pfs: Pfs) -> None:
    """A put finds its chunks stored already (left by a deleted commit) and skips writing
    them; a gc starting before the put commits must not take them away under it."""
    data = os.urandom(MIB)
    pfs.repos.create("data")
    put(pfs, "data@master:/old", data)
    seal(pfs)
    pfs.commits.delete("data@master")  # its chunks are garbage now
    batch = WriteBatch()
    content = pfs.store.contents.write_bytes(batch, data)  # deduplicated: nothing written
    assert not batch.chunks.pending
    done: list[GcReport] = []
    gc = threading.Thread(target=lambda: done.append(collect(pfs, wait=30)))
    gc.start()
    gc.join(0.5)  # long enough for an unguarded gc to finish
    pfs.files.apply("data@master", {"new": Entry(KIND_FILE, content.size, 0o644, 0,
                                                 content.digest)}, batch=batch)
    gc.join(30)
    assert done and done[0].chunks == 0
    assert read(pfs, "data@master:/new") == data


def test_writes_during_gc_lose_nothing(pfs: Pfs) -> None:
    """Writers reusing chunks that deleted commits left as garbage, while gc runs again and
    again: every commit still reads back whole, and fsck finds nothing."""
    blobs = [os.urandom(256 * 1024) for _ in range(6)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(repo: str) -> None:
        pfs.repos.create(repo)
        try:
            i = 0
            while not stop.is_set():
                put(pfs, f"{repo}@master:/f{i % 3}", blobs[i % 6])
                if i % 4 == 3:  # its chunks turn to garbage, and come back later
                    pfs.commits.delete(f"{repo}@master")
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(f"r{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    collections = 0
    try:
        for _ in range(12):
            try:
                collect(pfs, wait=10)
                collections += 1
            except Conflict:
                pass
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert collections > 0
    collect(pfs)
    assert fsck(pfs, verify_data=True).errors == []
    for repo in ("r0", "r1"):
        for commit in pfs.commits.list(repo):
            for info in pfs.files.list(f"{repo}@{commit.id}:/"):
                assert read(pfs, f"{repo}@{commit.id}:{info.path}") in blobs


def test_a_crash_before_the_packs_go_leaves_garbage_the_next_gc_frees(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index rows go first, in one transaction; the pack files after it. Dying in
    between leaves packs nothing points into: not an error, and the next gc deletes them."""
    root = tmp_path / "root"
    pfs = Pfs(root)
    pfs.repos.create("kept")
    keep = os.urandom(MIB // 2)
    put(pfs, "kept@master:/k", keep)
    seal(pfs)
    pfs.repos.create("gone")
    put(pfs, "gone@master:/g", os.urandom(2 * MIB))
    pfs.repos.delete("gone")

    def die(name: str) -> None:
        raise KeyboardInterrupt("the daemon died here")

    monkeypatch.setattr(pfs.store.objects, "delete", die)
    with pytest.raises(KeyboardInterrupt):
        collect(pfs)
    pfs.close()
    monkeypatch.undo()
    pfs = Pfs(root)
    try:
        assert fsck(pfs, verify_data=True).errors == []
        assert read(pfs, "kept@master:/k") == keep
        report = collect(pfs)
        assert report.packs >= 2 and report.chunks == 0
        assert fsck(pfs, verify_data=True).errors == []
        assert read(pfs, "kept@master:/k") == keep
    finally:
        pfs.close()


def test_a_pack_that_is_mostly_garbage_is_emptied_and_goes_at_the_next_gc(pfs: Pfs) -> None:
    pfs.repos.create("kept")
    pfs.repos.create("gone")
    kept = {f"k{i}": os.urandom(64 * 1024) for i in range(4)}
    for i, (name, data) in enumerate(kept.items()):  # interleaved in the same packs
        put(pfs, f"kept@master:/{name}", data)
        put(pfs, f"gone@master:/g{i}", os.urandom(MIB))
    seal(pfs)
    before = stored_bytes(pfs)
    with pfs.store.meta.read() as txn:
        _, entry = pfs.files.open("kept@master:/k0")
        digest = pfs.store.contents.table(txn, entry.ref).digests[0]
        old = pfs.store.packs.location(txn, digest)
    pfs.repos.delete("gone")

    first = collect(pfs)
    assert first.compacted >= 1 and 0 < first.moved <= 4 * 64 * 1024 + 4096
    assert first.packs_kept == 0 and first.garbage_kept == 0
    for name, data in kept.items():
        assert read(pfs, f"kept@master:/{name}") == data
    # A reader that looked the chunk up before the gc still reads it where it was.
    assert pfs.store.packs.read_run([(old, digest)]) == [kept["k0"]]  # one chunk, not cached
    assert fsck(pfs, verify_data=True).errors == []

    second = collect(pfs)
    assert second.packs == first.compacted and second.freed == first.freed_next
    assert stored_bytes(pfs) < before // 4
    for name, data in kept.items():
        assert read(pfs, f"kept@master:/{name}") == data


def test_a_compaction_without_space_keeps_what_the_sweep_freed(
        pfs: Pfs, monkeypatch: pytest.MonkeyPatch) -> None:
    pfs.repos.create("kept")
    pfs.repos.create("gone")
    put(pfs, "kept@master:/k", b"kept" * 1000)
    put(pfs, "gone@master:/g", os.urandom(MIB))
    seal(pfs)
    pfs.repos.delete("gone")
    move = pfs.store.packs.move

    def failing(txn: lmdb.Transaction, chunks: list[tuple[bytes, Location]]
                ) -> int:
        move(txn, chunks)  # bytes copied and rows changed in the transaction ...
        raise OSError(28, "No space left on device")  # ... which then aborts

    monkeypatch.setattr(pfs.store.packs, "move", failing)
    first = collect(pfs)  # the sweep's rows and dead packs are gone; the copy is not made
    assert first.chunks >= 1 and first.compacted == 0 and first.moved == 0
    monkeypatch.undo()
    assert read(pfs, "kept@master:/k") == b"kept" * 1000
    assert fsck(pfs, verify_data=True).errors == []
    report = collect(pfs)
    assert report.compacted == 1
    assert read(pfs, "kept@master:/k") == b"kept" * 1000


def test_bytes_a_failed_write_appended_are_reclaimed(pfs: Pfs,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A put that fails after its chunks reached a pack (the disk filled up before its
    transaction) leaves bytes no index row covers: gc counts them and gives them back."""
    pfs.repos.create("kept")
    put(pfs, "kept@master:/k", b"kept" * 1000)  # shares the pack with what fails below
    before = stored_bytes(pfs) + sum(  # the open pack is not an object yet
        p.stat().st_size for p in (pfs.store.root / "staging").glob("*.pack"))

    def full(*args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pfs.store.packs, "commit", full)
    with pytest.raises(StoreFull, match="the store's disk is full"):
        put(pfs, "kept@master:/failed", os.urandom(MIB // 2))
    monkeypatch.undo()
    first = collect(pfs)
    assert first.compacted == 1 and first.freed_next > MIB // 2
    second = collect(pfs)
    assert second.packs == 1 and second.freed == first.freed_next
    assert stored_bytes(pfs) <= before
    assert read(pfs, "kept@master:/k") == b"kept" * 1000
    assert fsck(pfs, verify_data=True).errors == []
