"""A full disk: every way in fails with a clear error, and freeing space brings it all back.

The store's root is a 200 MB ext4 loop filesystem. It is filled through ``file put``, then
written through the mount and through a pipeline, each of which must fail with one clear
line that says the store's disk is full (never blaming the source, never "internal error"),
and the mount must never show what the commit does not hold. Then space is freed (a repo
deleted, ``gc``): puts work again, ``fsck`` is clean, gc has given back what the failed
writes left, and every finished commit reads back byte for byte.

Needs root (``mount -o loop``); without it, or without a loop device, the test skips, except
under ``CI=true`` where it fails.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from pfsmount.errors import StoreFull
from pfsmount.store import meta as meta_module
from pfsmount.store.meta import Meta
from tests.conftest import Mounted, require_fuse, running, unusable

MB = 1_000_000
FULL = "the store's disk is full"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A fresh 200 MB ext4 filesystem on a loop device, mounted; gone afterwards."""
    ci = "CI runs as root with loop devices"
    if os.geteuid() != 0:
        unusable("a loop filesystem needs root", ci)
    for tool in ("truncate", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            unusable(f"{tool} is missing", ci)
    base = Path(tempfile.mkdtemp(prefix="pfsdisk", dir="/tmp"))
    img, top = base / "img", base / "d"
    top.mkdir()
    try:
        subprocess.run(["truncate", "-s", "200M", img], check=True)
        subprocess.run(["mkfs.ext4", "-q", img], check=True)
        p = subprocess.run(["mount", "-o", "loop", img, top], capture_output=True, text=True)
        if p.returncode != 0:
            unusable(f"cannot mount a loop filesystem: {p.stderr.strip()}", ci)
        yield top
    finally:
        if os.path.ismount(top) and subprocess.run(["umount", top]).returncode != 0:
            subprocess.run(["umount", "-l", top])
        shutil.rmtree(base, ignore_errors=True)


def one_line(p: subprocess.CompletedProcess[bytes]) -> str:
    err = p.stderr.decode(errors="replace").strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def digest(data: bytes) -> str:
    return hashlib.blake2b(data).hexdigest()


def test_a_full_disk_fails_clearly_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    require_fuse("CI must run the mount tests", "pyfuse3")
    with running(Mounted("pfs", parent=str(small_disk))) as d:
        def ok(*args: str | os.PathLike[str], input: bytes | None = None) -> str:
            p = d.call(*args, input=input)
            assert p.returncode == 0, (args, p.stderr.decode(errors="replace"),
                                       d.log_tail())
            return p.stdout.decode()

        def stored(ref: str) -> bytes:
            p = d.call("file", "get", ref)
            assert p.returncode == 0, p.stderr.decode(errors="replace")
            return p.stdout

        ok("repo", "create", "data")
        ok("repo", "create", "filler")
        kept = os.urandom(8 * MB)
        src = tmp_path / "src"
        src.write_bytes(kept)
        ok("file", "put", "data@master:/kept", src)
        finished = {"data@master": {"/kept": digest(kept)}}
        first = json.loads(ok("commit", "inspect", "data@master", "--json"))["id"]

        # 1. put: fill the disk until it says so, blaming the store, not the source.
        failed = None
        for i in range(12):
            src.write_bytes(os.urandom(30 * MB))
            p = d.call("file", "put", f"filler@master:/big{i}", src)
            if p.returncode != 0:
                failed = p
                break
        assert failed is not None, "200 MB took 360 MB of puts"
        line = one_line(failed)
        assert failed.returncode == StoreFull.exit_code, line
        assert FULL in line and "cannot read" not in line and str(src) not in line, line
        # Any source (stdin here) says the same.
        p = d.call("file", "put", "filler@master:/stdin", "-", input=os.urandom(30 * MB))
        assert p.returncode == StoreFull.exit_code and FULL in one_line(p)

        # 2. the mount: the writer is told (ENOSPC), and the mount shows what the commit
        # holds: a new file that could not be saved is not there, an old one is unchanged.
        branch = d.mnt / "data" / "master"
        assert (branch / "kept").read_bytes() == kept
        for name in ("new.bin", "kept"):
            code = None
            try:
                with open(branch / name, "wb") as f:
                    for _ in range(40):
                        f.write(os.urandom(MB))
                    os.fsync(f.fileno())
            except OSError as e:
                code = e.errno
            assert code == errno.ENOSPC, f"writing {name}: {code}"
        deadline = time.monotonic() + 5  # the kernel releases a closed file a moment later
        while ((branch / "new.bin").exists() or (branch / "kept").stat().st_size != len(kept)
               ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (branch / "new.bin").exists()
        assert (branch / "kept").stat().st_size == len(kept)
        assert (branch / "kept").read_bytes() == kept
        shown = sorted(os.listdir(branch))
        with_commit = d.call("commit", "finish", "data/master")  # if the mount opened one
        assert with_commit.returncode in (0, 5), one_line(with_commit)
        listed = json.loads(ok("file", "list", "data@master:/", "--json"))
        assert sorted(f["path"].lstrip("/") for f in listed) == shown == ["kept"]
        assert stored("data@master:/kept") == kept

        # 3. a pipeline whose datums write more than there is room for: its job fails with
        # the reason in its message; the output branch does not move.
        spec = tmp_path / "fill.json"
        spec.write_text(json.dumps({
            "pipeline": {"name": "fill"},
            "input": {"pfs": {"repo": "data", "glob": "/"}},
            "transform": {"cmd": ["sh", "-c", "head -c 60000000 /dev/urandom > /pfs/out/x"]},
            "datum_tries": 1}))
        ok("pipeline", "create", "-f", spec)
        deadline = time.monotonic() + 60
        jobs: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            jobs = json.loads(ok("job", "list", "-p", "fill", "--json"))
            if jobs and jobs[0]["state"] in ("failure", "success"):
                break
            time.sleep(0.3)
        assert jobs and jobs[0]["state"] == "failure", jobs
        message = json.dumps(jobs[0])
        assert "No space left on device" in message or FULL in message, message
        ok("pipeline", "delete", "fill")

        # 4. free space: delete what filled it, collect, and everything works again.
        ok("repo", "delete", "filler", "--force")
        for _ in range(2):  # sparse packs are emptied by one gc and deleted by the next
            ok("gc")
        src.write_bytes(after := os.urandom(20 * MB))
        ok("file", "put", "data@master:/after", src)
        finished["data@master"]["/after"] = digest(after)
        with open(branch / "mounted.bin", "wb") as f:
            f.write(mounted := os.urandom(10 * MB))
        ok("commit", "finish", "data/master")
        finished["data@master"]["/mounted.bin"] = digest(mounted)
        assert (branch / "mounted.bin").read_bytes() == mounted
        d.check_fsck()
        # Every finished commit reads back byte for byte.
        assert digest(stored(f"data@{first}:/kept")) == digest(kept)
        for path, want in finished["data@master"].items():
            assert digest(stored(f"data@master:{path}")) == want, path
        # gc gave back what the failed writes left: the packs hold little beyond live data.
        packs = sum(p.stat().st_size for p in (d.root / "store").rglob("*.pack"))
        assert packs < 1.3 * (8 + 20 + 10) * MB + 8 * MB, f"{packs} bytes of packs left"


def test_lmdb_out_of_space_says_what_is_full(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A real LMDB environment with a tiny map: MDB_MAP_FULL is StoreFull, not internal."""
    monkeypatch.setattr(meta_module, "MAP_SIZE", 1 << 20)
    meta = Meta(tmp_path / "meta")
    try:
        with pytest.raises(StoreFull, match="metadata is full"):
            for i in range(1000):
                with meta.write() as txn:
                    txn.put(i.to_bytes(4, "big"), os.urandom(4000), db=meta.db["chunks"])
        with meta.read() as txn:  # what committed before is there
            assert txn.get((0).to_bytes(4, "big"), db=meta.db["chunks"]) is not None
    finally:
        meta.close()
    assert lmdb.MapFullError  # the error LMDB raises, turned into StoreFull above
