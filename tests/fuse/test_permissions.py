"""Who may use the mount: only the user who mounted it, unless ``up --allow-other``.

The daemon here is root's (as on many machines); the other user is a real ordinary user made
by the fixture (tests/confine.py), running real programs against the real mount. Without
``--allow-other`` that user cannot even list it. With it, the kernel enforces the modes the
mount shows (``default_permissions``): files put by the owner are readable, not writable,
and only the owner can chmod, so a repo is opened to others only by its owner's choice.
Set-uid bits and devices never take effect (``nosuid``, ``nodev``). Where an ordinary user
may not mount at all, ``up`` says exactly why and what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.confine import confined
from tests.conftest import (
    PFSMOUNT,
    PROJECT,
    Other,
    Result,
    error_line,
    require_fuse,
    running,
    short_root,
)
from tests.fuse.conftest import Mount


class Shared(Mount):
    """A root daemon mounting at a directory every user can reach (the root directory itself
    is 0700), with extra ``up`` flags."""

    def __init__(self, *flags: str) -> None:
        super().__init__("pfpm")
        self.flags = flags
        self.share = Path(tempfile.mkdtemp(prefix="pfpmnt", dir="/tmp"))
        self.share.chmod(0o755)
        self.mnt = self.share / "mnt"
        self.mnt.mkdir()

    def start(self, *flags: str | os.PathLike[str]) -> tuple[int, str]:
        return super().start(*flags, *self.flags)

    def cleanup(self) -> None:
        super().cleanup()
        if not os.path.ismount(self.mnt):
            shutil.rmtree(self.share, ignore_errors=True)


def mount_options(mnt: Path) -> set[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(mnt):
            return set(fields[5].split(",")) | set(fields[-1].split(","))
    raise AssertionError(f"{mnt} is not mounted")


def test_the_mount_is_private_to_the_user_who_mounted_it(other: Other) -> None:
    require_fuse("CI must run the mount tests", "pyfuse3")
    with running(Shared()) as m:
        repo = m.new_repo()
        m.put(f"{repo}@master:/f", b"data\n")
        f = m.branch(repo) / "f"
        assert f.read_bytes() == b"data\n"  # the owner (root) uses it as ever
        commands = (f"ls {m.mnt}", f"cat {f}", f"echo x > {m.branch(repo)}/new")
        for command, (code, said) in zip(commands, other.each(*commands), strict=True):
            assert code != 0 and "Permission denied" in said, (command, said)
        assert "allow_other" not in mount_options(m.mnt)
        assert {"nosuid", "nodev", "default_permissions"} <= mount_options(m.mnt)


def test_allow_other_lets_others_in_as_the_mode_bits_say(other: Other) -> None:
    require_fuse("CI must run the mount tests", "pyfuse3")
    with running(Shared("--allow-other")) as m:
        repo = m.new_repo()
        m.put(f"{repo}@master:/f", b"data\n")
        branch = m.branch(repo)
        f = branch / "f"
        # Readable as put (0644); not the owner: no writing, no chmod (to open it wider),
        # no new files.
        commands = (f"cat {f}", f"echo x >> {f}", f"chmod 666 {f}", f"echo x > {branch}/new")
        seen = other.each(*commands)
        assert seen[0] == (0, "data\n"), seen
        for command, (code, said), why in zip(commands[1:], seen[1:], (
                "Permission denied", "Operation not permitted", "Permission denied"),
                strict=True):
            assert code != 0 and why in said, (command, said)
        assert f.read_bytes() == b"data\n" and not (branch / "new").exists()
        # The owner decides: closed to others, then open to their writes.
        f.chmod(0o600)
        r = other.sh(f"cat {f}")
        assert r.code != 0 and "Permission denied" in r.err, r
        f.chmod(0o666)
        assert other.sh(f"echo more >> {f}").code == 0
        assert f.read_bytes() == b"data\nmore\n"
        assert {"allow_other", "nosuid", "nodev", "default_permissions"} <= mount_options(m.mnt)


def test_up_says_why_an_ordinary_user_cannot_mount(other: Other, tmp_path: Path) -> None:
    """On every host, also one that lets ordinary users open /dev/fuse: the user's /dev/fuse
    is covered by a root-only file in a mount namespace of the test's own."""
    uid = other.user.uid
    blocker = tmp_path / "no-fuse"
    blocker.write_bytes(b"")
    blocker.chmod(0o600)
    root = short_root("pfpu")
    try:
        shutil.chown(root, uid, other.user.gid)
        argv = confined(["sh", "-c", f"{PFSMOUNT} --root {root} up --mount {root}/mnt"],
                        other.scratch, PROJECT, other.user)
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            'mount --bind "$0" /dev/fuse && exec "$@"', str(blocker), *argv],
                           capture_output=True, text=True, timeout=60)
        r = Result(p.returncode, p.stdout, p.stderr)
        line = error_line(r, "up as an ordinary user without /dev/fuse")
        assert line == (f"error: cannot mount {root}/mnt: /dev/fuse is not accessible to uid "
                        f"{uid}; use --no-mount, or add the user to the fuse group / chmod "
                        "0666 /dev/fuse"), line
        assert not (root / "pfsmount.sock").exists()
        log = root / "daemon.log"
        assert not log.exists() or "Traceback" not in log.read_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)
