"""The mount's view model and write overlay, driven without FUSE: what ``/pfs/<repo>/<view>``
would show while a file is being written, once it is staged and flushed, in a commit id's
view, and what the kernel would be told to forget after a change made elsewhere."""

from __future__ import annotations

from pathlib import Path

import trio

from pfsmount.pfs import Event, Pfs
from pfsmount.pfs.files import Data
from pfsmount.pfs.overlay import Key, Overlay
from pfsmount.pfs.staged import Dirty
from pfsmount.pfs.view import KIND_FILE, Views


class Inodes:
    """The overlay's view of whoever names its files (the mount's inode table)."""

    def __init__(self) -> None:
        self.keys: dict[int, Key] = {}
        self.holds: dict[int, int] = {}

    def where(self, fid: int) -> tuple[Key, bool]:
        return self.keys[fid], False

    def held(self, fid: int, delta: int) -> None:
        self.holds[fid] = self.holds.get(fid, 0) + delta

    def rebase(self, fid: int, dirty: Dirty) -> int:
        return 0


def names(views: Views, repo: str, view: str) -> list[str]:
    root = views.view(repo, view).root
    assert root is not None
    return [name for name, _ in views.listing(root, None, [])]


def test_a_file_being_written_shows_in_its_branch_before_it_is_finished(
        pfs: Pfs, tmp_path: Path) -> None:
    pfs.repos.create("data")
    inodes = Inodes()
    overlay = Overlay(pfs, tmp_path / "staging", inodes)
    views = Views(pfs, overlay)
    key: Key = ("data", "master", "a.txt")
    inodes.keys[7] = key

    async def write() -> None:
        dirty = overlay.create(7, key, 0o644)
        dirty.write(0, b"hello")
        # Not stored anywhere yet: the branch has no commit, the overlay shows the file.
        assert views.view("data", "master").commit is None
        shown = views.entry("data", "master", "a.txt", 7)
        assert shown is not None and (shown.kind, shown.size) == (KIND_FILE, 5)
        assert views.exists(views.view("data", "master"), key)
        await overlay.release(7, dirty)  # closed = staged in the journal, still served here
        assert pfs.journal.pending() == 1
        assert overlay.files[7] is dirty and inodes.holds[7] == 1
        await trio.to_thread.run_sync(views.flush_journal)
        while 7 in overlay.files:  # dropped once the flush's notice reaches the trio thread
            await trio.sleep(0.001)

    trio.run(write)
    assert inodes.holds[7] == 0 and not overlay.created
    views.model_changed()  # what the mount's invalidator does on every event
    branch = views.view("data", "master")
    assert branch.writable and not branch.immutable
    assert branch.commit is not None and branch.commit.is_open
    entry = views.entry("data", "master", "a.txt", 99)  # a fresh inode: from the tree now
    assert entry is not None and views.read(entry, 0, 100) == b"hello"
    assert names(views, "data", "master") == ["a.txt"]

    finished = pfs.commits.finish("data@master")
    views.model_changed()
    by_id = views.view("data", finished.id)
    assert not by_id.writable and by_id.immutable  # the kernel may cache it for good
    entry = views.entry("data", finished.id, "a.txt", 99)
    assert entry is not None and views.read(entry, 1, 3) == b"ell"
    assert views.view("data", "master").writable  # the branch stays writable


def test_a_change_made_elsewhere_names_what_the_kernel_must_forget(
        pfs: Pfs, tmp_path: Path) -> None:
    pfs.repos.create("data")
    pfs.files.put("data@master:/d/old.txt", Data(b"old"))
    views = Views(pfs, Overlay(pfs, tmp_path / "staging", Inodes()))
    assert names(views, "data", "master") == ["d"]  # the kernel has seen the branch
    events: list[Event] = []
    pfs.events.subscribe(events.append)
    pfs.files.put("data@master:/d/new.txt", Data(b"new"))
    views.model_changed()
    [change] = [e for e in events if e.kind == "files_changed"]
    assert not views.own_change(change)
    stale = views.stale(change, known=lambda key: True)
    # The new name's directory and its entry; "d" stays a directory, so its dentry stays.
    assert (("data", "master", "d"), "new.txt") in stale.names
    assert ("data", "master", "d") in stale.keys
    assert (("data", "master", ""), "d") not in stale.names
    # Told once: the next look at the same change finds nothing new.
    assert views.stale(change, known=lambda key: True).names == []
