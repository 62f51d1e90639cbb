"""An unexpected error inside a handler fails that one call with EIO; the mount stays up.

The error is real, not injected into the code: with the daemon stopped, one directory's tree
page in the LMDB ``nodes`` sub-database is overwritten with garbage (same key), so decoding it
raises inside the handlers that need it. Afterwards the page is put back and fsck must be
clean again. The same stop also makes a pipeline output repo through the daemon-less Python
API, which the mount must show read-only.
"""

from __future__ import annotations

import errno
import os
import subprocess
from typing import TYPE_CHECKING

import lmdb

from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from tests.fuse.conftest import errno_of

if TYPE_CHECKING:
    from tests.fuse.conftest import Mount

GARBAGE = b"\xc1\xff not a tree page \x00\x01"




def set_page(store_root: os.PathLike[str], key: bytes, value: bytes) -> bytes:
    """Overwrite one ``nodes`` row with plain lmdb; returns the old value."""
    env = lmdb.open(os.fspath(store_root), max_dbs=16, subdir=True)
    try:
        nodes = env.open_db(b"nodes")
        with env.begin(write=True) as txn:
            old = txn.get(key, db=nodes)
            assert old is not None, "no such page"
            txn.put(key, value, db=nodes)
        return bytes(old)
    finally:
        env.close()


def test_corrupt_page_gives_eio_and_the_mount_survives(mount: Mount) -> None:
    repo = mount.new_repo("rob")
    br = mount.branch(repo)
    (br / "bad").mkdir()
    for i in range(5):
        (br / "bad" / f"f{i}").write_bytes(b"bad data %d" % i)
    (br / "good").mkdir()
    (br / "good" / "g").write_bytes(b"good data")
    (br / "top").write_bytes(b"top data")
    cid = mount.finish(f"{repo}@master")
    other = mount.new_repo("rob")
    mount.put(f"{other}@master:/x", b"elsewhere")

    mount.down()
    store = mount.root / "store"
    pfs = Pfs(store)
    try:
        with pfs.store.meta.read() as txn:
            commit = pfs.records.commit(txn, cid)
            entry = pfs.store.trees.lookup(txn, bytes.fromhex(commit.root), "bad")
            assert entry is not None and entry.is_dir
            page = entry.ref
        # A pipeline output repo, made the way the scheduler makes one.
        pfs.repos.create("pipe-out", kind="pipeline")
        pfs.files.put("pipe-out@master:/result.txt", Data(b"computed\n"), system=True)
    finally:
        pfs.close()
    original = set_page(store / "meta", page, GARBAGE)
    try:
        mount.up()
        for where in (br, mount.mnt / repo / cid):
            # The damaged directory: each call fails with EIO, quickly.
            assert errno_of(os.listdir, where / "bad") == errno.EIO
            assert errno_of(os.stat, where / "bad" / "f1") == errno.EIO
            assert errno_of(open, where / "bad" / "f1", "rb") == errno.EIO
            p = subprocess.run(["cat", str(where / "bad" / "f2")], capture_output=True,
                               text=True, timeout=30)
            assert p.returncode != 0 and "Input/output error" in p.stderr, p.stderr
            p = subprocess.run(["ls", str(where / "bad")], capture_output=True, text=True,
                               timeout=30)
            assert p.returncode != 0 and "Input/output error" in p.stderr, p.stderr
            # Everything else still works.
            assert sorted(os.listdir(where)) == ["bad", "good", "top"]
            assert (where / "good" / "g").read_bytes() == b"good data"
            assert (where / "top").read_bytes() == b"top data"
        assert errno_of(open, br / "bad" / "new", "wb") == errno.EIO
        assert mount.health() is None, "one bad page ended the mount"
        assert (mount.branch(other) / "x").read_bytes() == b"elsewhere"
        (mount.branch(other) / "y").write_bytes(b"still writable")
        assert mount.get(f"{other}@master:/y") == b"still writable"
        assert "unexpected error" in mount.log_text()  # logged with its traceback
        # fsck names the damage.
        p = mount.run("fsck")
        assert p.returncode != 0
        assert page.hex() in p.stdout.decode(), p.stdout

        # The pipeline repo made while the daemon was down: shown, and read-only.
        out = mount.mnt / "pipe-out" / "master"
        assert "pipe-out" in os.listdir(mount.mnt)
        assert (out / "result.txt").read_bytes() == b"computed\n"
        for code in (errno_of(open, out / "result.txt", "r+b"),
                     errno_of(open, out / "new", "wb"),
                     errno_of(os.mkdir, out / "d"),
                     errno_of(os.unlink, out / "result.txt"),
                     errno_of(os.truncate, out / "result.txt", 0)):
            assert code in (errno.EROFS, errno.EACCES), errno.errorcode[code]
        assert (out / "result.txt").read_bytes() == b"computed\n"
    finally:
        mount.down()
        set_page(store / "meta", page, original)
        mount.up()
    # Repaired: the same paths read again (the teardown's fsck must be clean too).
    assert sorted(os.listdir(br / "bad")) == [f"f{i}" for i in range(5)]
    assert (mount.mnt / repo / cid / "bad" / "f3").read_bytes() == b"bad data 3"
