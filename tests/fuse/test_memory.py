"""The daemon's memory stays bounded however many trees the mount reads.

Every change to a branch makes a new tree root, and the mount reads the pages of each new
root it serves. Decoded pages were cached by count (8,192 of them): pages of big directories
with long names decode to hundreds of KiB each, and under load the daemon grew from 48 MB to
over 1 GB. The cache is now bounded by bytes; this test makes hundreds of distinct roots whose
pages are all big and watches the daemon's own (anonymous) resident memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fuse.conftest import Mount

NAMES = 500  # entries per directory: one full page each
CHANGES = 300  # distinct roots, each with three new big pages


def rss_anon_mib(pid: int) -> float:
    """The process's own resident memory (heap, not the files it maps, such as LMDB's)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


def test_memory_stays_bounded_over_many_tree_roots(mount: Mount, tmp_path: Path) -> None:
    repo = mount.new_repo("mem")
    src = tmp_path / "src"
    deep = src / "a" / "b" / "c"
    deep.mkdir(parents=True)
    for level in (src / "a", src / "a" / "b", deep):
        for i in range(NAMES):
            (level / f"{i:04d}-{'n' * 200}").write_bytes(b"x")
    (deep / "target").write_bytes(b"target\n")
    mount.ok("file", "put", "-r", f"{repo}@master:/", src)
    target = mount.branch(repo) / "a" / "b" / "c" / "target"
    assert target.read_bytes() == b"target\n"
    assert mount.pid is not None
    os.utime(target, ns=(1, 1))  # the first change opens a commit
    before = rss_anon_mib(mount.pid)
    for i in range(CHANGES):
        # Each one is a change in the open commit: a new root, and new pages for a, b and c
        # (the file's entry changed), all read again to answer the kernel.
        os.utime(target, ns=(i + 2, i + 2))
        assert os.stat(target).st_mtime_ns == i + 2
    grown = rss_anon_mib(mount.pid) - before
    # Unbounded, the 900 decoded pages (~0.4 MiB each) took over 300 MiB.
    assert grown < 120, f"the daemon grew by {grown:.0f} MiB over {CHANGES} tree roots"
    assert target.read_bytes() == b"target\n"
    mount.finish(f"{repo}@master")
    with mount.api() as c:
        assert c.inspect_file(f"{repo}@master:/a/b/c/target").mtime == (CHANGES + 1) / 1e9
