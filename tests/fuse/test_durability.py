"""A crash of the daemon mid-copy loses nothing that was closed (or made) before it.

Files are copied into the mount one by one; each name is recorded only once its ``close()``
returned (that is when the mount stores a file), and so is each empty directory once its
``mkdir()`` returned. Another thread SIGKILLs the daemon in the
middle. ``pfsmount up`` must then clear the dead mount by itself and serve again; every
recorded file is there with its full content, no file is torn, and fsck is clean.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fuse.conftest import Mount

FILES = 500
KILL_AFTER = 120  # closed files before the kill


def content(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def test_sigkill_during_copy_keeps_every_closed_file(mount: Mount, tmp_path: Path) -> None:
    repo = mount.new_repo("crash")
    rng = random.Random(7)
    names = [f"d{i % 7}/f{i:04d}" if i % 3 else f"f{i:04d}" for i in range(FILES)]
    sizes = {n: rng.choice([0, 1, 100, 4096, 5000, 70_000, 300_000]) for n in names}
    dest = mount.branch(repo)

    closed: list[str] = []
    error: list[OSError] = []
    killed = threading.Event()

    def killer() -> None:
        deadline = time.monotonic() + 120
        while len(closed) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.001)
        mount.kill()
        killed.set()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    made: list[str] = []  # empty directories, recorded once mkdir() returned
    try:
        for i, name in enumerate(names):
            path = dest / name
            path.parent.mkdir(exist_ok=True)
            with open(path, "wb") as f:
                f.write(content(name, sizes[name]))
            closed.append(name)
            if i % 11 == 0:
                (dest / f"empty{i:04d}").mkdir()
                made.append(f"empty{i:04d}")
    except OSError as e:
        error.append(e)
    t.join(timeout=130)
    assert killed.is_set()
    assert error, "the copy finished before the kill: the test proved nothing"
    assert KILL_AFTER <= len(closed) < FILES

    # The dead mount: programs get an error, not a hang.
    try:
        os.listdir(dest)
    except OSError:
        pass
    else:
        raise AssertionError("a dead FUSE mount still answered")

    mount.up()  # clears the stale mount by itself
    for name in made:
        assert (dest / name).is_dir(), f"directory {name} was made before the crash and is gone"
    for name in closed:
        path = dest / name
        assert path.is_file(), f"{name} was closed before the crash and is gone"
        assert path.read_bytes() == content(name, sizes[name]), f"{name} is not complete"
    # No torn file: whatever else made it is complete too (a file lands whole at close).
    present = [str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()]
    for name in present:
        assert (dest / name).read_bytes() == content(name, sizes[name]), name
    assert set(closed) <= set(present)
    assert len(present) <= len(closed) + 1  # at most the file being closed at the kill
    mount.check_fsck()

    # The branch goes on: more writes, then a seal that holds everything.
    (dest / "after-restart").write_bytes(b"fine")
    cid = mount.finish(f"{repo}@master")
    sealed = mount.mnt / repo / cid
    for name in closed[:: max(1, len(closed) // 25)]:
        assert (sealed / name).read_bytes() == content(name, sizes[name])
    assert (sealed / "after-restart").read_bytes() == b"fine"
    assert mount.get(f"{repo}@master:/{closed[-1]}") == content(closed[-1], sizes[closed[-1]])
