"""``pfsmount gc``: the space of a deleted repo comes back, and nothing live is touched."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import Pfsmount

MIB = 1 << 20


def packs_on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.pack"))


def test_gc_frees_a_deleted_repo_and_keeps_the_rest(fresh_pfsd: Pfsmount,
                                                    tmp_path: Path) -> None:
    cli = fresh_pfsd
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(72 * MIB))  # more than one 64 MiB pack
    kept = tmp_path / "kept.csv"
    kept.write_bytes(b"id,value\n1,apple\n")
    cli.ok("repo", "create", "gone")
    cli.ok("file", "put", "gone@master:/big.bin", big)  # fills a pack of its own
    cli.ok("repo", "create", "kept")
    cli.ok("file", "put", "kept@master:/kept.csv", kept)
    cli.ok("repo", "delete", "gone")
    before = packs_on_disk(cli.root)

    dry = cli.json("gc", "--dry-run")
    assert dry["dry_run"] and dry["packs"] >= 1 and dry["freed"] >= 60 * MIB
    # The last pack holds the rest of big.bin and all of kept.csv: mostly garbage, so the
    # live part moves out, and the old pack goes at the next gc.
    assert dry["compacted"] == 1 and dry["moved"] < MIB and dry["freed_next"] >= 4 * MIB
    assert packs_on_disk(cli.root) == before
    out = cli.ok("gc")
    assert out.startswith("freed "), out
    assert "removed" in out and "chunks" in out and "emptied 1 packs" in out
    assert packs_on_disk(cli.root) <= before - dry["freed"] + dry["moved"]
    assert cli.get("file", "get", "kept@master:/kept.csv") == kept.read_bytes()
    again = cli.json("gc")
    assert (again["chunks"], again["contents"], again["compacted"]) == (0, 0, 0)
    assert again["packs"] == 1 and again["freed"] == dry["freed_next"]
    assert packs_on_disk(cli.root) < MIB
    assert cli.get("file", "get", "kept@master:/kept.csv") == kept.read_bytes()


def test_gc_bad_input(fresh_pfsd: Pfsmount) -> None:
    fresh_pfsd.fails("gc", "--wait", "-1", code=2)
