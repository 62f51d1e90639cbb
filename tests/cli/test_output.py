"""What the command prints and loads, beyond any one noun: names printed exactly as stored,
a reader that goes away, and a start-up that does not load what the command does not use."""

from __future__ import annotations

import os
import subprocess
import sys

from pfsmount import Client
from tests.conftest import PROJECT, env


def test_names_with_brackets_colons_and_wide_characters_print_as_they_are(
        pfsd, client: Client, repo: str) -> None:
    # Brackets and :words: are data, not markup or emoji codes.
    odd = ["/a[bold]b", "/c[x].txt", "/d[i]", "/e:smile:f", "/表計算.csv", "/plain"]
    for path in odd:
        client.put_file(f"{repo}@master:{path}", b"x")
    out = pfsd.ok("file", "list", f"{repo}@master")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "SIZE"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(odd)
    # Columns line up, also after two-cell-wide characters (TYPE starts in one column).
    starts = {line.split()[0]: line.index("  file") for line in lines[1:]}
    wide = starts.pop("/表計算.csv") + len("表計算")  # a cell more per character
    assert set(starts.values()) == {wide}
    assert all(line == line.rstrip() for line in lines)
    assert pfsd.ok("file", "inspect", f"{repo}@master:/e:smile:f").startswith(
        "Path:    /e:smile:f\n")
    assert f"{repo}  " in pfsd.ok("repo", "list")


def test_a_reader_that_goes_away_ends_the_command_quietly(pfsd, repo: str) -> None:
    read, write = os.pipe()
    os.close(read)  # like `pfsmount ... | head -0`: every write meets a closed pipe
    try:
        p = subprocess.run(pfsd.argv("repo", "list"), stdout=write, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, env=env(), timeout=60)
    finally:
        os.close(write)
    assert p.returncode == 141, p.stderr.decode()
    assert p.stderr == b""


def test_start_up_loads_only_what_the_command_uses() -> None:
    """``--help`` loads no HTTP transport, no rich and not the model; a client command
    loads no httpx and no rich. Importing the store (as the daemon's reader processes do)
    loads no client."""
    probe = """
import sys
sys.argv = ["pfsmount", *sys.argv[1:]]
import cli
try:
    cli.main()
except SystemExit:
    pass
heavy = ("httpx", "rich", "pygments", "pfsmount.api.client", "pfsmount.pfs", "lmdb",
         "http.client")
print(" ".join(m for m in heavy if m in sys.modules), file=sys.stderr)
"""

    def loaded(*args: str) -> set[str]:
        p = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                           text=True, cwd=PROJECT, env=env(), timeout=60)
        return set(p.stderr.splitlines()[-1].split())

    assert loaded("--help") == set()
    assert loaded("file", "--help") == set()
    # No daemon here: the command fails, but only after it loaded what a request needs.
    assert loaded("--root", "/nonexistent/pfsmount-root", "status") == {
        "pfsmount.api.client", "http.client"}
    p = subprocess.run([sys.executable, "-c", "import sys, pfsmount.store.readers; "
                        "print(sorted(m for m in ('httpx', 'rich', 'pfsmount.api.client') "
                        "if m in sys.modules))"],
                       capture_output=True, text=True, cwd=PROJECT, env=env(), timeout=60)
    assert p.stdout.strip() == "[]", p.stderr
