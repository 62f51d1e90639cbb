"""The fruit-stand walkthrough with its pipelines, end to end, as an ordinary user on a machine
that has no ``/pfs``: ``up``, repos, 1.x ``put-file``, ``create-pipeline``, ``flush-commit``,
``get-file`` of the sums, a second day of sales, ``list-job``, ``get-logs``, ``down``.

The user is made by the fixture (``useradd``) and every command runs as that user, in a mount
namespace whose root has no ``/pfs`` and none of root's home (tests/confine.py). The
pipelines run in the bubblewrap sandbox through the user's own user namespace.

With ``--no-mount`` it must pass everywhere. Through the mount it runs only where the host lets
ordinary users open /dev/fuse; where it does not (this machine: /dev/fuse is 0600 root), the
test checks instead that ``up`` says exactly that, in one line, and leaves nothing running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.confine import User, confined, ordinary_user
from tests.conftest import EXAMPLES, Pfsmount, error_line, short_root

ID = r"[0-9a-f]{32}"


class AsUser(Pfsmount):
    """``pfsmount --root ROOT`` run as ``user`` in a namespace without /pfs."""

    def __init__(self, user: User) -> None:
        super().__init__(short_root("pfou"))
        self.user = user
        self.scratch = self.root / ".newroot"
        self.scratch.mkdir()
        os.chown(self.root, user.uid, user.gid)

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return confined(super().argv(*args), self.scratch, EXAMPLES, self.user)

    def shell(self, command: str) -> str:
        """A shell command run the same way (as the user, without /pfs); its stdout."""
        p = subprocess.run(confined(["sh", "-c", command], self.scratch, EXAMPLES, self.user),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{command}: {p.stderr}"
        return p.stdout


@pytest.fixture
def as_user() -> Iterator[AsUser]:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is needed: the walkthrough's pipelines run in it")
    d = AsUser(ordinary_user())
    try:
        yield d
    finally:
        d.cleanup()


def sums(*sales: bytes) -> dict[str, bytes]:
    """What the sum pipeline must print per fruit for these days of sales."""
    total: dict[str, int] = {}
    for day in sales:
        for line in day.decode().splitlines():
            fruit, amount = line.split()
            total[fruit] = total.get(fruit, 0) + int(amount)
    return {fruit: f"{n}\n".encode() for fruit, n in total.items()}


def walkthrough(pfs: AsUser, *up_flags: str) -> None:
    """The walkthrough from ``up`` to ``down``; the daemon and the datums run as the user."""
    set1, set2 = (EXAMPLES / "set1.txt").read_bytes(), (EXAMPLES / "set2.txt").read_bytes()

    def run(*args: str) -> str:
        r = pfs.run(*args, timeout=180)
        assert r.code == 0, f"pfsmount {' '.join(args)} exited {r.code}: {r.err}\n" \
                            f"{pfs.log_tail()}"
        assert "Traceback" not in r.err, r.err
        return r.out

    assert pfs.shell("id -u; test -e /pfs && echo has /pfs || echo no /pfs").split() == [
        str(pfs.user.uid), "no", "/pfs"]
    out = run("up", *up_flags)
    pid = int(re.search(r"\(pid (\d+)\)", out)[1])  # type: ignore[index]
    pfs.pids.add(pid)
    status = Path(f"/proc/{pid}/status").read_text()
    assert re.search(rf"^Uid:\s+{pfs.user.uid}\s", status, re.M), "the daemon is not the user's"
    run("create-repo", "data")
    assert re.fullmatch(rf"data@{ID}\n", run("put-file", "data", "master", "sales", "-c", "-f",
                                               "set1.txt"))
    assert run("create-pipeline", "-f", "pipelines.json").split() == ["filter", "sum"]
    flushed = run("flush-commit", "data@master")
    assert {line.split()[1] for line in flushed.splitlines()[1:]} == {  # 1.x ids
        "filter/master/0", "sum/master/0"}, flushed
    for fruit, total in sums(set1).items():
        assert pfs.get("get-file", "sum", "master", fruit) == total, fruit

    run("put-file", "data", "master", "sales", "-c", "-f", "set2.txt")
    run("flush-commit", "data@master")
    for fruit, total in sums(set1, set2).items():
        assert pfs.get("get-file", "sum", "master", fruit) == total, fruit
    jobs = run("list-job")
    assert len(re.findall(r"\bsuccess\b", jobs)) == 4, jobs
    assert "failure" not in jobs, jobs
    if "--no-mount" not in up_flags:  # and the same through the user's own mount
        mnt = up_flags[up_flags.index("--mount") + 1]
        assert pfs.shell(f"cat {mnt}/sum/master/apple").encode() == sums(set1, set2)["apple"]
    assert re.search(r": 0 errors$", run("fsck").strip())
    assert re.fullmatch(r"pfsmount stopped \(pid \d+\)\n", run("down"))


def test_walkthrough_as_an_ordinary_user_without_the_mount(as_user: AsUser) -> None:
    walkthrough(as_user, "--no-mount")


def test_walkthrough_as_an_ordinary_user_through_the_mount(as_user: AsUser) -> None:
    mnt = as_user.root / "mnt"
    mnt.mkdir()
    os.chown(mnt, as_user.user.uid, as_user.user.gid)
    can_mount = as_user.shell("test -r /dev/fuse -a -w /dev/fuse && echo yes || echo no")
    if can_mount.strip() == "yes":
        walkthrough(as_user, "--mount", str(mnt))
        return
    # This host does not let ordinary users mount (/dev/fuse is root's): `up` must say so in
    # one line, with what to do, and leave nothing behind; --no-mount serves (test above).
    r = as_user.run("up", "--mount", str(mnt), timeout=90)
    line = error_line(r, "pfsmount up as an ordinary user without /dev/fuse")
    assert "/dev/fuse" in line and "--no-mount" in line, line
    assert not (as_user.root / "pfsmount.sock").exists()
    assert as_user.run("status").code != 0
