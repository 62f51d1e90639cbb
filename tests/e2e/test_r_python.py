"""The fruit stand for R and Python users, with the real R, pandas, daemon, mount and sandbox.

README's "R and Python users" section is run as written (its ``/pfs/`` pointed at the test's
mount, its ``pfsmount`` at the test's root): the R and pandas snippets read
``/pfs/data/master/sales`` straight from the mount, and the shell block puts the scripts in a
``code`` repo and creates the R and pandas pipelines, which run in bubblewrap with the host's
``Rscript`` and ``/usr/bin/python3``. Every total they give must equal the shell pipelines'
(``examples/fruit_stand/pipelines.json``) and a recomputation from the raw sales, after the
first commit and after the second appends to it.

R, Debian's pandas (for the sandbox), pandas in the venv (for the snippet), FUSE and bwrap
are real parts: missing, they skip the tests on a developer's machine and fail them under
``CI=true``.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfsmount import Client
from pfsmount.api.pipeline_client import PipelineClient
from tests.conftest import (
    EXAMPLES,
    PFSMOUNT,
    PROJECT,
    Commands,
    Mounted,
    env,
    require_fuse,
    running,
    unusable,
)

CI_NOTE = "CI must run the R and Python examples (packaging/install.sh installs them)"
FRUITS = ("apple", "banana", "orange")
SUMS = ("sum", "sum_r", "sum_pandas")  # the shell, R and pandas pipelines' output repos

pytestmark = pytest.mark.timeout(240, method="thread")  # a hung mount read ignores signals


class Stand(Commands, Mounted):
    """A daemon with its mount at ROOT/mnt, driven by the ``pfsmount`` command."""


def works(*argv: str) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


HAS_PANDAS = "import importlib.util, sys; sys.exit(importlib.util.find_spec('pandas') is None)"


def require_r_and_pandas() -> None:
    """What the examples run on: Rscript, the host's python3 with Debian's pandas (for the
    sandbox) and pandas in the interpreter running the tests (for the README snippet)."""
    if shutil.which("bwrap") is None:
        unusable("bubblewrap (bwrap) is not installed", CI_NOTE)
    if not works("Rscript", "--version"):
        unusable("R (Rscript) is not installed: Debian r-base-core", CI_NOTE)
    if not works("/usr/bin/python3", "-c", HAS_PANDAS):
        unusable("/usr/bin/python3 cannot import pandas: Debian python3-pandas", CI_NOTE)
    if importlib.util.find_spec("pandas") is None:
        unusable(f"{sys.executable} cannot import pandas: pip install -e '.[test]'", CI_NOTE)


@pytest.fixture(scope="module")
def stand() -> Iterator[Stand]:
    require_fuse(CI_NOTE, "pyfuse3")
    require_r_and_pandas()
    with running(Stand("pfsr")) as d:
        yield d


def readme_blocks(lang: str) -> list[str]:
    """The ``lang`` code blocks of README's "R and Python users" section."""
    text = (PROJECT / "README.md").read_text()
    section = text.split("\n## R and Python users\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```{lang}\n(.*?)^```$", section, re.M | re.S)


def totals_of(sales: bytes) -> dict[str, int]:
    """The totals per fruit, recomputed from the raw sales lines."""
    totals = Counter[str]()
    for line in sales.decode().splitlines():
        fruit, amount = line.split()
        totals[fruit] += int(amount)
    assert set(totals) == set(FRUITS)
    return dict(totals)


def on_mount(code: str, d: Stand) -> str:
    """README code with its /pfs/ pointed at the test's mount."""
    assert "/pfs/" in code
    return code.replace("/pfs/", f"{d.mnt}/")


def run(argv: list[str], what: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=PROJECT,
                       env=env())
    assert p.returncode == 0, f"{what} exited {p.returncode}:\n{p.stdout}{p.stderr}"
    return p.stdout


def snippet_totals(d: Stand, tmp_path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """What README's R and pandas snippets print, read from the mount: fruit -> total."""
    r_code, = readme_blocks("r")
    py_code, = readme_blocks("python")
    (tmp_path / "sums.R").write_text(on_mount(r_code, d))
    (tmp_path / "sums.py").write_text(on_mount(py_code, d))
    # R prints a named vector: a line of names, then a line of values.
    names, values = run(["Rscript", str(tmp_path / "sums.R")], "the README's R").splitlines()
    from_r = {f: int(v) for f, v in zip(names.split(), values.split(), strict=True)}
    # pandas prints a Series: "fruit", one "name  value" line each, "Name: amount, ...".
    out = run([sys.executable, str(tmp_path / "sums.py")], "the README's pandas")
    from_pandas = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    return from_r, from_pandas


def sums(d: Stand) -> dict[str, dict[str, int]]:
    """Each sum pipeline's output on master, read through the mount: repo -> fruit -> total."""
    found: dict[str, dict[str, int]] = {}
    for repo in SUMS:
        top = d.mnt / repo / "master"
        found[repo] = {p.name: int(p.read_text()) for p in sorted(top.iterdir())}
        assert all(p.read_text().endswith("\n") for p in top.iterdir())
    return found


def test_r_and_pandas_sum_the_fruit_stand_as_the_shell_does(stand: Stand,
                                                            tmp_path: Path) -> None:
    d = stand
    set1 = (EXAMPLES / "set1.txt").read_bytes()
    set2 = (EXAMPLES / "set2.txt").read_bytes()
    # The walkthrough so far: the data, the shell pipelines.
    d.ok("create-repo", "data")
    d.ok("put-file", "data", "master", "sales", "-c", "-f", EXAMPLES / "set1.txt")
    d.ok("create-pipeline", "-f", EXAMPLES / "pipelines.json")
    d.ok("flush-commit", "data/master")

    # README's snippets read the branch straight from the mount.
    expected = totals_of(set1)
    assert snippet_totals(d, tmp_path) == (expected, expected)

    # README's shell block, as typed: the code repo, the R and pandas pipelines.
    block, = (b for b in readme_blocks("sh") if "pipeline_r.json" in b)
    script = (f"set -euo pipefail\npfsmount() {{ {shlex.quote(str(PFSMOUNT))} --root "
              f"{shlex.quote(str(d.root))} \"$@\"; }}\n" + on_mount(block, d))
    out = run(["bash", "-c", script], "README's R and Python block").splitlines()
    assert out[-5:] == [str(expected["apple"])] * 2 + [f"{f} {expected[f]}" for f in FRUITS]
    assert sums(d) == {repo: expected for repo in SUMS}

    # Provenance: the R output names the data and the script it came from.
    with Client(d.root, timeout=60) as c:
        heads = {f"{repo}@{c.inspect_commit(f'{repo}@master').id}" for repo in ("data", "code")}
        provenance = c.inspect_commit("sum_r@master").provenance
    assert heads <= set(provenance), provenance

    # The second day's sales, appended as 1.x did: every pipeline reruns, all agree.
    d.ok("put-file", "data", "master", "sales", "-c", "-f", EXAMPLES / "set2.txt")
    d.ok("flush-commit", "data/master")
    expected = totals_of(set1 + set2)
    assert sums(d) == {repo: expected for repo in SUMS}
    assert snippet_totals(d, tmp_path) == (expected, expected)
    with Client(d.root, timeout=60) as c:
        for pipeline in ("sum_r", "sum_pandas"):
            jobs = PipelineClient(c).jobs(pipeline)
            assert [j.state for j in jobs] == ["success"] * 2, jobs
