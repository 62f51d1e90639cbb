"""``bash packaging/walkthrough.sh``, the README's main command, as root and as an ordinary user
on a machine without ``/pfs``: it runs the seed's story to the end and prints what a newcomer
reads (the totals after each commit, equal to a recount of the raw sales; the provenance of
the final result; the one-off job on exact commits; where to look next). As an ordinary user
who cannot open ``/dev/fuse`` it says so in one line and runs with ``--no-mount``; it installs
nothing (root did).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.confine import confined, ordinary_user
from tests.conftest import EXAMPLES, PFSMOUNT, PROJECT, short_root
from tests.scheduler.conftest import require_bwrap

SCRIPT = PROJECT / "packaging" / "walkthrough.sh"


def totals(*days: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for day in days:
        for line in (EXAMPLES / day).read_text().splitlines():
            fruit, amount = line.split()
            out[fruit] += int(amount)
    return out


def check_story(out: str) -> None:
    """What every run prints, whatever the mount."""
    for n, days in ((0, ("set1.txt",)), (1, ("set1.txt", "set2.txt"))):
        t = totals(*days)
        line = (f"Totals after data/master/{n}: apple {t['apple']}, banana {t['banana']}, "
                f"orange {t['orange']} (as a recount of the raw sales gives)")
        assert line in out.splitlines(), out
    assert "sum/master/1 was computed from filter/master/1, data/master/1" in out, out
    day1, day2 = totals("set1.txt"), totals("set2.txt")
    table = re.search(r"^fruit +day 1 +day 2\n((?:\w+ +\d+ +\d+\n){3})", out, re.M)
    assert table, out
    assert [line.split() for line in table[1].splitlines()] == [
        [f, str(day1[f]), str(day2[f])] for f in ("apple", "banana", "orange")]
    assert re.search(r"^checked 4 repos, 7 commits, .*: 0 errors$", out, re.M), out
    assert re.search(r"^    pfsmount notebook (--no-mount )?sum/master/1 ", out, re.M), out
    assert "Traceback" not in out


def walk(argv: list[str], root: Path) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=PROJECT)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert p.stderr == "", p.stderr
    r = subprocess.run([str(PFSMOUNT), "--root", str(root / "root"), "status"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, "--down left the daemon serving"
    return p.stdout


@pytest.fixture
def story_dir() -> Iterator[Path]:
    d = short_root("pfwt")
    yield d / "wt"
    shutil.rmtree(d, ignore_errors=True)


def test_walkthrough_as_root(story_dir: Path) -> None:
    require_bwrap()
    if os.getuid() != 0:
        pytest.skip("the root run needs root")  # the ordinary-user test covers this user
    out = walk(["env", f"PFSMOUNT_WALKTHROUGH_DIR={story_dir}", "bash", str(SCRIPT),
                "--no-install", "--down"], story_dir)
    check_story(out)
    assert "(no mount" not in out  # root can mount
    assert f"$ pfsmount up --mount {story_dir}/pfs" in out


def test_walkthrough_as_an_ordinary_user(story_dir: Path) -> None:
    require_bwrap()
    user = ordinary_user()
    os.chown(story_dir.parent, user.uid, user.gid)
    scratch = story_dir.parent / ".newroot"
    scratch.mkdir()
    # No --no-install: as a user it must use what root installed, and install nothing.
    out = walk(confined(["env", f"PFSMOUNT_WALKTHROUGH_DIR={story_dir}", "bash", str(SCRIPT),
                         "--down"], scratch, PROJECT, user), story_dir)
    check_story(out)
    assert "==> apt packages" not in out
    notes = [line for line in out.splitlines() if line.startswith("(no mount")]
    can_mount = os.access("/dev/fuse", os.R_OK | os.W_OK) if os.getuid() != 0 else \
        (os.stat("/dev/fuse").st_mode & 0o006) == 0o006
    if can_mount:
        assert notes == [], out
    else:  # one line, naming /dev/fuse and what it does instead
        assert len(notes) == 1 and "/dev/fuse" in notes[0], out
        assert notes[0].endswith("; so the story runs with --no-mount)"), notes
        assert "$ pfsmount up --no-mount" in out


def readme_block(after: str) -> list[str]:
    """The commands of the first ``sh`` block after the line ``after`` in README.md."""
    text = (PROJECT / "README.md").read_text()
    block = re.search(r"^```sh\n(.*?)^```$", text.split(after, 1)[1], re.M | re.S)
    assert block, after
    return [line.split("  #")[0].strip() for line in block[1].splitlines() if line.strip()]


def test_readme_quick_start_by_hand(story_dir: Path) -> None:
    """README's 1.x block, as typed, with ``/pfs`` at a mount of the test's own; the notebook
    line (it serves until Ctrl-C) is left out."""
    require_bwrap()
    commands = readme_block("The same by hand, with the seed's 1.x commands")
    assert commands[0] == "pfsmount up" and commands[-1] == "pfsmount down"
    mnt = story_dir.parent / "pfs"
    mnt.mkdir()
    script = ["set -e", f"export PATH={PFSMOUNT.parent}:$PATH "
              f"PFSMOUNT_ROOT={story_dir.parent / 'root'}", f"cd {PROJECT}",
              f"pfsmount up --mount {mnt}", "trap 'pfsmount down >/dev/null 2>&1' EXIT"]
    script += [c.replace("/pfs/", f"{mnt}/") for c in commands[1:-1]
               if not c.startswith("pfsmount notebook")]
    p = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    both = totals("set1.txt", "set2.txt")
    lines = p.stdout.splitlines()
    assert lines.count(str(both["apple"])) == 2, p.stdout  # get-file, then cat of the mount
    assert re.search(r"^master +sum/master/1 +master/0 ", p.stdout, re.M), p.stdout
    assert re.search(r"^Provenance: +filter@[0-9a-f]{32}, data@[0-9a-f]{32}$", p.stdout,
                     re.M), p.stdout
