"""Deduplication across versions: ten versions of one big file, each a new commit.

Version 1 is 256 MiB of random bytes (--quick: 64 MiB); each next version is the previous
one with 5 random 4 KiB writes at random offsets. Each version is put to the same path with
``pfsmount file put`` (one commit each). Reported: bytes stored after all ten (pack files
under ROOT/store/packs plus ROOT/store/staging) / one version's size. Target: <= 1.2x.

Baselines in the same run: ten plain copies (what a copy per version costs, 10x by
construction, measured with ``cp``), and DVC (``dvc add`` of each version, size of
.dvc/cache) when the peers venv exists. LMDB metadata size and per-version put time are
shown for information.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c

VERSIONS = 10
EDITS = 5
EDIT = 4096


def versions(path: Path, size: int, seed: int):  # type: ignore[no-untyped-def]
    """Write version 1 to ``path``, yield, edit it in place, yield ... ten times."""
    r = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(r.randbytes(1 << 20))
    yield 1
    for v in range(2, VERSIONS + 1):
        # Opened anew each time: a tool may have replaced the file (dvc add does).
        fd = os.open(path, os.O_WRONLY)
        try:
            for _ in range(EDITS):
                os.pwrite(fd, r.randbytes(EDIT), r.randrange(0, size - EDIT))
        finally:
            os.close(fd)
        yield v


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=None, help="version size (default 256)")
    args = c.finish_args(p.parse_args())
    size = (args.size_mib or (64 if args.quick else 256)) << 20
    base = c.fresh_dir(args.workdir / "dedup")
    c.same_disk_note(args.workdir)
    peers = c.peer_python()
    peer_env = dict(os.environ, DVC_NO_ANALYTICS="1", HOME=str(base / "peer-home"))
    if peers is not None:
        peer_env["PATH"] = f"{peers.parent}:{peer_env['PATH']}"
    work = base / "work"
    src = work / "big.bin"

    ratios: dict[str, list[float]] = {"pfs": [], "copies": [], "dvc": []}
    meta: list[float] = []
    put_times: list[float] = []
    per_edit: list[float] = []
    cp_times: list[float] = []
    for n in range(args.runs):
        c.console.print(f"run {n + 1}/{args.runs}")
        c.fresh_dir(work)
        copies = c.fresh_dir(base / "copies")
        if peers is not None:
            c.run("git init -q && dvc init -q", cwd=work, env=peer_env)
        daemon = c.fresh_daemon(base / "pfsroot")
        try:
            daemon.pfs("create-repo", "data")
            commits = set()
            digests = set()
            for v in versions(src, size, seed=1000 + n):
                seconds, out = c.timed(lambda d=daemon: d.pfs("file", "put", "data@master:/big.bin",
                                                         str(src)))
                put_times.append(seconds)
                commits.add(out.stdout.strip())
                digests.add(hashlib.blake2b(src.read_bytes(), digest_size=16).digest())
                cp_times.append(c.timed_cmd(["cp", str(src), str(copies / f"v{v}.bin")]))
                if peers is not None:
                    c.run(["dvc", "add", "-q", "big.bin"], cwd=work, env=peer_env)
            assert len(commits) == VERSIONS, f"expected {VERSIONS} commits, got {commits}"
            assert len(digests) == VERSIONS, "the versions are not all different"
            got = base / "got.bin"
            daemon.pfs("file", "get", "data@master:/big.bin", "-o", str(got))
            c.run(["cmp", str(src), str(got)])
            got.unlink()
            packs, lmdb_bytes = c.store_bytes(daemon.root)
        finally:
            daemon.down()
        ratios["pfs"].append(packs / size)
        per_edit.append((packs - size) / ((VERSIONS - 1) * EDITS))
        meta.append(lmdb_bytes / size)
        ratios["copies"].append(c.dir_bytes(copies) / size)
        if peers is not None:
            ratios["dvc"].append(c.dir_bytes(work / ".dvc" / "cache") / size)
        shutil.rmtree(copies)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)

    res = c.Results(f"{VERSIONS} versions of a {c.mib(size)} random file, {EDITS} x {EDIT} B "
                    f"random edits between versions: bytes stored / one version "
                    f"(median of {args.runs})")
    res.add(c.Row("one version", [1.0], unit="x", note="baseline: the size of one version"))
    res.add(c.Row("10 plain copies (cp)", ratios["copies"], unit="x", note="what copies cost"))
    res.add(c.Row("dvc add each version", ratios["dvc"], unit="x",
                  note=".dvc/cache" if ratios["dvc"] else "peers venv missing"))
    res.add(c.Row("pfsmount, 10 commits", ratios["pfs"], unit="x", target="<= 1.2x",
                  check=lambda r: r <= 1.2, note="packs/ + staging/"))
    res.add(c.Row("pfsmount LMDB metadata", meta, unit="x", note="info, not counted above"))
    res.print({
        "put per version (CLI), median": c.fmt(statistics.median(put_times), "s"),
        "pfsmount bytes stored per 4 KiB edit, median":
            f"{statistics.median(per_edit) / 1024:,.0f} KiB (the chunks an edit rewrites; "
            "the ratio shrinks as the file grows)",
        "cp per version, median": c.fmt(statistics.median(cp_times), "s") + " (warm cache)",
    })


if __name__ == "__main__":
    main()
