"""File names through the mount: what the store keeps is accepted, the rest refused at once.

The store keeps names as UTF-8 of at most 255 bytes. ``echo data > "x$(printf '\\xff')"``
used to exit 0 and show the file, which the commit then lacked. Such names are now refused
when created (EINVAL; over 255 bytes ENAMETOOLONG), by create, mkdir, rename, symlink and
link alike, and every name the mount accepted is in the commit after ``commit finish``,
byte for byte.
"""

from __future__ import annotations

import errno
import os
import subprocess
from typing import TYPE_CHECKING

from tests.fuse.conftest import errno_of

if TYPE_CHECKING:
    from tests.fuse.conftest import Mount




def test_names_the_store_cannot_keep_are_refused(mount: Mount) -> None:
    repo = mount.new_repo("nm")
    top = bytes(mount.branch(repo))
    (mount.branch(repo) / "keep").write_bytes(b"kept\n")
    bad, long = b"x\xff", b"n" * 256

    shell = subprocess.run(["sh", "-c", 'echo data > "$1"', "sh", top + b"/" + bad],
                           capture_output=True, timeout=30)
    assert shell.returncode != 0
    assert b"Invalid argument" in shell.stderr
    assert errno_of(open, top + b"/" + bad, "wb") == errno.EINVAL
    assert errno_of(open, top + b"/" + long, "wb") == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, top + b"/d\xfe") == errno.EINVAL
    assert errno_of(os.mkdir, top + b"/" + long) == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, top + b"/d\xfe", 0o700) == errno.EINVAL
    assert errno_of(os.symlink, b"keep", top + b"/l\xff") == errno.EINVAL
    assert errno_of(os.rename, top + b"/keep", top + b"/k\xff") == errno.EINVAL
    assert errno_of(os.rename, top + b"/keep", top + b"/" + long) == errno.ENAMETOOLONG
    assert errno_of(os.link, top + b"/keep", top + b"/h\xff") == errno.EINVAL
    os.mknod(top + b"/ok-node")  # mknod of a plain file is a create
    assert errno_of(os.mknod, top + b"/m\xff") == errno.EINVAL

    # Nothing of it shows, and the commit holds exactly what the mount shows.
    assert sorted(os.listdir(top)) == [b"keep", b"ok-node"]
    assert (mount.branch(repo) / "keep").read_bytes() == b"kept\n"
    mount.finish(f"{repo}@master")
    with mount.api() as c:
        assert sorted(f.path for f in c.walk_files(f"{repo}@master")) == ["/keep", "/ok-node"]
        assert c.read_file(f"{repo}@master:/keep") == b"kept\n"


ODD = [
    "n" * 255,  # the longest name there is
    "é" * 127 + "x",  # 255 bytes of UTF-8, 128 characters
    "with space", "tab\there", "new\nline", "-rf", "a:b@c^d~1", "back\\slash",
    "...", ".hidden", "日本語.txt", "emoji-🦀", "quote'\"", "*?[glob]",
]


def test_every_name_the_mount_accepts_is_in_the_commit(mount: Mount) -> None:
    repo = mount.new_repo("nm")
    top = mount.branch(repo)
    written: dict[str, bytes] = {}
    for i, name in enumerate(ODD):
        (top / name).write_bytes(name.encode() + b"\n")
        written[name] = name.encode() + b"\n"
        d = top / f"dir-{i}-{name[:40]}"
        d.mkdir()
        (d / name).write_bytes(b"below\n")
        written[f"{d.name}/{name}"] = b"below\n"
    (top / "src").write_bytes(b"moved\n")
    os.rename(top / "src", top / ("é" * 127 + "y"))
    written["é" * 127 + "y"] = b"moved\n"
    os.symlink("with space", top / "link 🦀")

    # What the mount shows before the finish is what the commit holds after it.
    shown = {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() and
             not p.is_symlink()}
    assert shown == set(written)
    commit = mount.finish(f"{repo}@master")
    with mount.api() as c:
        stored = {f.path[1:]: f for f in c.walk_files(f"{repo}@{commit}")}
        assert set(stored) == set(written) | {"link 🦀"}
        assert stored["link 🦀"].target == "with space"
        for path, data in written.items():
            assert c.read_file(f"{repo}@{commit}:/{path}") == data, path
    for path, data in written.items():  # and the commit's own view reads the same
        assert (mount.mnt / repo / commit / path).read_bytes() == data
