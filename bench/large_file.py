"""One large file in and out: ``pfsmount file put`` / ``file get -o`` vs ``cp`` on the same disk.

Two 1 GiB files (--quick: 256 MiB): random bytes (incompressible) and CSV-like text lines
(zstd shrinks it to about a third). Every row starts from a cold page cache; before each
get the daemon is restarted so its chunk cache is empty too, and each put goes into a fresh
store (a second put of the same bytes would only be deduplicated).

Baselines: ``cp SRC DST`` (into the disk) and ``cp DST BACK`` (back out), each cold; for
information also ``cp && sync DST``, since a pfsmount put fsyncs its pack before it
commits, and the CLI's own cost (``pfsmount status`` from a cold cache). Reported as
throughput (MB/s, 10^6 bytes) and ratio to cp. Target: >= 0.5x of cp both ways.

A get checks every chunk against its BLAKE3 name before writing it (worker threads read and
hash runs of chunks ahead of the writes), so the get rows include that cost: cp copies
without looking.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c

BLOCK = 1 << 20


def make_random(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    c.console.print(f"generating {c.mib(size)} of random bytes at {path}")
    with open(path, "wb") as f:
        for _ in range(size // BLOCK):
            f.write(os.urandom(BLOCK))


def make_text(path: Path, size: int) -> None:
    """CSV log lines: every MiB block is a fresh random sample of a 200k-line pool, so the
    file compresses like text but does not repeat itself chunk by chunk."""
    if path.exists() and path.stat().st_size == size:
        return
    c.console.print(f"generating {c.mib(size)} of CSV text at {path}")
    r = random.Random(7)
    ri = r.randrange
    verbs = ("GET", "POST", "PUT", "DELETE")
    paths = ("/api/v1/items", "/api/v1/users", "/static/app.js", "/login", "/api/v2/orders")
    pool = [
        f"2024-{ri(1, 13):02d}-{ri(1, 29):02d}T{ri(24):02d}:{ri(60):02d}:{ri(60):02d},"
        f"user{ri(100000):06d},{verbs[ri(4)]},{paths[ri(5)]}/{ri(10**6)},"
        f"{(200, 200, 200, 304, 404, 500)[ri(6)]},{ri(1, 100000)},{ri(1, 5000) / 1000:.3f}\n"
        .encode()
        for _ in range(200_000)
    ]
    written = 0
    with open(path, "wb") as f:
        while written < size:
            block = b"".join(r.choices(pool, k=15_000))[: size - written]
            f.write(block)
            written += len(block)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=None, help="file size (default 1024)")
    args = c.finish_args(p.parse_args())
    size = (args.size_mib or (256 if args.quick else 1024)) << 20
    base = args.workdir / "large"
    base.mkdir(parents=True, exist_ok=True)
    c.same_disk_note(args.workdir)
    kinds = {"random": base / f"random-{size >> 20}M.bin", "text": base / f"text-{size >> 20}M.csv"}
    make_random(kinds["random"], size)
    make_text(kinds["text"], size)
    copy, back, got = base / "copy.tmp", base / "back.tmp", base / "got.tmp"

    mbs: dict[str, list[float]] = {}
    startup: list[float] = []  # `pfsmount status`, cold cache: the CLI's fixed cost
    stored: dict[str, int] = {}

    def rate(key: str, seconds: float) -> None:
        mbs.setdefault(key, []).append(size / seconds / 1e6)

    for n in range(args.runs):
        for kind, src in kinds.items():
            c.console.print(f"run {n + 1}/{args.runs}: {kind}")
            for f in (copy, back, got):
                f.unlink(missing_ok=True)
            c.drop_caches()
            rate(f"{kind} cp in", c.timed_cmd(["cp", str(src), str(copy)]))
            c.drop_caches()
            rate(f"{kind} cp back", c.timed_cmd(["cp", str(copy), str(back)]))
            back.unlink()
            c.drop_caches()
            rate(f"{kind} cp+sync", c.timed_cmd(f"cp '{src}' '{back}' && sync '{back}'"))
            for f in (copy, back):
                f.unlink()

            daemon = c.fresh_daemon(base / "pfsroot")
            try:
                daemon.pfs("create-repo", "data")
                c.drop_caches()
                with c.profiled(daemon.pid, f"daemon during put of {kind}",
                                args.profile and n == 0):
                    rate(f"{kind} put", c.timed_cmd(
                        daemon.cli("file", "put", f"data@master:/{src.name}", str(src))))
                stored[kind] = c.store_bytes(daemon.root)[0]
                daemon.restart()
                c.drop_caches()
                with c.profiled(daemon.pid, f"daemon during get of {kind}",
                                args.profile and n == 0):
                    rate(f"{kind} get", c.timed_cmd(
                        daemon.cli("file", "get", f"data@master:/{src.name}", "-o", str(got))))
                if got.stat().st_size != size:
                    raise RuntimeError(f"get wrote {got.stat().st_size} bytes, not {size}")
                if n == 0:
                    c.run(["cmp", str(src), str(got)])
                got.unlink()
                c.drop_caches()  # what every CLI row above pays before its first byte
                startup.append(c.timed_cmd(daemon.cli("status")))
            finally:
                daemon.down()

            # The same through the Python API in this process: no CLI start-up.
            daemon = c.fresh_daemon(base / "pfsroot")
            try:
                with daemon.client() as api:
                    api.create_repo("data")
                    c.drop_caches()
                    rate(f"{kind} put api", c.timed(
                        lambda api=api, src=src: api.put_file(f"data@master:/{src.name}", src))[0])
                daemon.restart()
                with daemon.client() as api:
                    c.drop_caches()
                    rate(f"{kind} get api", c.timed(
                        lambda api=api, src=src: api.export(f"data@master:/{src.name}", got))[0])
                got.unlink()
            finally:
                daemon.down()
    if not args.keep:
        shutil.rmtree(base / "pfsroot", ignore_errors=True)

    res = c.Results(f"one {c.mib(size)} file, cold cache, throughput median of {args.runs} "
                    "(higher is better)")
    for kind in kinds:
        res.add(c.Row(f"{kind} cp in", mbs[f"{kind} cp in"], unit="MB/s", note="baseline"))
        res.add(c.Row(f"{kind} cp+sync", mbs[f"{kind} cp+sync"], unit="MB/s",
                      baseline=f"{kind} cp in", note="info: cp that fsyncs like put does"))
        res.add(c.Row(f"{kind} put", mbs[f"{kind} put"], unit="MB/s", baseline=f"{kind} cp in",
                      target=">= 0.5x cp", check=lambda r: r >= 0.5,
                      note=f"CLI, 1 commit; stored {c.mib(stored[kind])}"))
        res.add(c.Row(f"{kind} put (API)", mbs[f"{kind} put api"], unit="MB/s",
                      baseline=f"{kind} cp in", note="info: Client.put_file, no CLI start-up"))
        res.add(c.Row(f"{kind} cp back", mbs[f"{kind} cp back"], unit="MB/s",
                      note="baseline"))
        res.add(c.Row(f"{kind} get -o", mbs[f"{kind} get"], unit="MB/s",
                      baseline=f"{kind} cp back", target=">= 0.5x cp", check=lambda r: r >= 0.5,
                      note="CLI, daemon restarted (empty chunk cache)"))
        res.add(c.Row(f"{kind} get (API)", mbs[f"{kind} get api"], unit="MB/s",
                      baseline=f"{kind} cp back", note="info: Client.export, no CLI start-up"))
    res.add(c.Row("CLI start-up, cold", startup, note="info: `pfsmount status` after a cache "
                  "drop, in every CLI row above"))
    res.print()


if __name__ == "__main__":
    main()
