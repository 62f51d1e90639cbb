"""Mixed load on one daemon: mount writers, mount readers and API putters at once.

For ``--seconds`` (default 180; ``--seconds 60`` for a quick run) these run together against
one input repo, through a real mount (``pfsmount up --mount M``):

- 8 mount writers: each writes files of 1 KiB to 512 KiB (random bytes) under its own
  directory, ``open``/``write``/``close``, cycling over 400 names so that later writes
  replace earlier ones;
- 4 mount readers: each reads back (``open``/``read``/``close``) a file some writer has
  closed;
- 2 API putters: ``Client.put_file`` of 1 KiB to 64 KiB into the open commit
  (``load@master:/api<i>/...``, no finish per put);
- every 10 s a ``commit finish`` of the branch (as a user sealing a batch of work), so the
  run makes many commits and many tree roots, as a day of use does.

Afterwards the branch is finished once more and every write that succeeded is checked
byte for byte in that commit: the last version of each path that a writer or putter saw
succeed must be what the commit holds (``lost writes`` must be 0). The daemon's RSS is read
from ``/proc/<pid>/status`` every ``--every`` seconds; the verdict on memory compares the
last quarter of the run with its second quarter: the daemon's own memory (RssAnon) must
stay flat (at most 1.25x, or +64 MiB, whichever is larger). VmRSS, which adds the pages of
LMDB's file the daemon has touched, is shown beside it. The table reports throughput,
p50/p99 latency of writes, reads and puts, and the RSS samples. There is no external
baseline: the figures are the product's own under load, and the check is that they hold
over time.
"""

from __future__ import annotations

import functools
import hashlib
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c
import mount as m

WRITERS, READERS, PUTTERS = 8, 4, 2
NAMES = 400  # files per writer; later writes replace earlier ones
FINISH_EVERY = 10.0
REPO = "load"


@dataclass
class Stats:
    """Latencies (seconds) and bytes of one kind of operation, and its failures."""

    latencies: list[float] = field(default_factory=list)
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, size: int) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.bytes += size

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Load:
    def __init__(self, daemon: m.MountedDaemon, seconds: float, every: float) -> None:
        self.daemon = daemon
        self.branch = daemon.mountpoint / REPO / "master"
        self.seconds = seconds
        self.every = every
        self.stop = threading.Event()
        self.expected: dict[str, bytes] = {}  # path -> digest of the last successful write
        self.expected_lock = threading.Lock()
        self.written: list[str] = []  # paths a reader may pick
        self.writes, self.reads, self.puts = Stats(), Stats(), Stats()
        self.finishes = 0
        self.rss: list[tuple[float, tuple[int, int]]] = []  # (seconds since start, kB)

    # -- workers ---------------------------------------------------------------------------

    def _succeeded(self, path: str, data: bytes) -> None:
        with self.expected_lock:
            if path not in self.expected:
                self.written.append(path)
            self.expected[path] = hashlib.blake2b(data).digest()

    def writer(self, i: int) -> None:
        rng = random.Random(i)
        (self.branch / f"w{i}").mkdir(exist_ok=True)
        n = 0
        while not self.stop.is_set():
            path = f"w{i}/f{n % NAMES:03d}"
            data = rng.randbytes(rng.choice((1024, 4096, 16384, 65536, 200_000, 512 * 1024)))
            start = time.perf_counter()
            try:
                with open(self.branch / path, "wb") as f:
                    f.write(data)
            except OSError as e:
                self.writes.fail(f"{path}: {e}")
            else:
                self.writes.add(time.perf_counter() - start, len(data))
                self._succeeded(path, data)
            n += 1

    def reader(self, i: int) -> None:
        rng = random.Random(100 + i)
        while not self.stop.is_set():
            with self.expected_lock:
                path = rng.choice(self.written) if self.written else None
            if path is None:
                time.sleep(0.05)
                continue
            start = time.perf_counter()
            try:
                with open(self.branch / path, "rb") as f:
                    size = len(f.read())
            except OSError as e:
                self.reads.fail(f"{path}: {e}")
            else:
                self.reads.add(time.perf_counter() - start, size)

    def putter(self, i: int) -> None:
        from pfsmount import Client

        rng = random.Random(200 + i)
        n = 0
        with Client(self.daemon.root, timeout=120) as client:
            while not self.stop.is_set():
                path = f"api{i}/f{n % NAMES:03d}"
                data = rng.randbytes(rng.choice((1024, 8192, 65536)))
                start = time.perf_counter()
                try:
                    client.put_file(f"{REPO}@master:/{path}", data)
                except Exception as e:  # a failed put is reported, never counted as written
                    self.puts.fail(f"{path}: {e}")
                else:
                    self.puts.add(time.perf_counter() - start, len(data))
                    self._succeeded(path, data)
                n += 1

    def finisher(self) -> None:
        while not self.stop.wait(FINISH_EVERY):
            if self.daemon.pfs("commit", "finish", f"{REPO}/master", check=False).returncode == 0:
                self.finishes += 1

    def sampler(self, t0: float) -> None:
        while True:
            self.rss.append((time.monotonic() - t0, rss_kb(self.daemon.pid)))
            if self.stop.wait(self.every):
                self.rss.append((time.monotonic() - t0, rss_kb(self.daemon.pid)))
                return

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> float:
        t0 = time.monotonic()
        jobs: list[tuple[Callable[..., None], tuple[object, ...]]] = [
            *((self.writer, (i,)) for i in range(WRITERS)),
            *((self.reader, (i,)) for i in range(READERS)),
            *((self.putter, (i,)) for i in range(PUTTERS)),
            (self.finisher, ()), (self.sampler, (t0,)),
        ]
        threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in jobs]
        for t in threads:
            t.start()
        deadline = t0 + self.seconds
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            self.daemon.check("the load")
        self.stop.set()
        for t in threads:
            t.join(timeout=300)
        return time.monotonic() - t0

    def lost_writes(self) -> tuple[int, str]:
        """(writes that succeeded but are not byte for byte in the finished commit, commit)."""
        from pfsmount import Client

        self.daemon.pfs("commit", "finish", f"{REPO}/master", check=False)
        with Client(self.daemon.root, timeout=120) as client:
            commit = client.inspect_commit(f"{REPO}@master").id
            lost = 0
            for path, digest in self.expected.items():
                try:
                    data = client.read_file(f"{REPO}@{commit}:/{path}")
                except Exception:
                    lost += 1
                    continue
                lost += hashlib.blake2b(data).digest() != digest
        return lost, commit


def rss_kb(pid: int | None) -> tuple[int, int]:
    """(VmRSS, RssAnon) of ``pid`` in kB: all resident pages, and those of its own heap
    (the rest are file pages: LMDB's map, shared libraries)."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                found[key] = int(value.split()[0])
    return found.get("VmRSS", 0), found.get("RssAnon", 0)


def flat(samples: list[int]) -> tuple[bool, float]:
    """Whether the last quarter's mean stays within 1.25x (or +64 MiB) of the second
    quarter's; and that ratio."""
    n = len(samples)
    if n < 8:
        return True, float("nan")
    second = statistics.mean(samples[n // 4: n // 2])
    last = statistics.mean(samples[3 * n // 4:])
    return last <= max(1.25 * second, second + 64 * 1024), last / second


def _verdict(ok: bool, _value: float) -> bool:
    return ok


def main() -> int:
    p = c.parser(__doc__.split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=180.0, help="how long the load runs")
    p.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    args = c.finish_args(p.parse_args())
    if args.quick:
        args.seconds = min(args.seconds, 60.0)
    c.same_disk_note(args.workdir)
    root, mnt = args.workdir / "load-root", args.workdir / "load-mnt"
    daemon = m.fresh_mounted(root, mnt)
    try:
        daemon.pfs("repo", "create", REPO)
        load = Load(daemon, args.seconds, args.every)
        with c.profiled(daemon.pid, "load", args.profile):
            wall = load.run()
        lost, commit = load.lost_writes()
        daemon.check("the check")
    finally:
        daemon.down()
        if not args.keep:
            m.unmount(mnt)
    results = c.Results(f"pfsmount under load: {WRITERS} mount writers, {READERS} mount "
                        f"readers, {PUTTERS} API putters, {wall:.0f} s")
    for name, stats in (("mount write (open+write+close)", load.writes),
                        ("mount read (open+read+close)", load.reads),
                        ("API put_file", load.puts)):
        n = len(stats.latencies)
        note = (f"{n / wall:,.0f} ops/s, {stats.bytes / wall / 1e6:,.1f} MB/s, "
                f"p99 {c.fmt(stats.pct(0.99), 's')}, {len(stats.errors)} failed")
        results.add(c.Row(f"{name} p50", [stats.pct(0.5)], note=note))
    results.add(c.Row("lost writes", [float(lost)], unit="files", target="0",
                      check=lambda v: v == 0, absolute=True,
                      note=f"of {len(load.expected):,} paths, checked in {commit}"))
    n = len(load.rss)
    picks = [load.rss[i] for i in sorted({0, n // 2, n - 1})] if n else []
    # RssAnon is the daemon's own memory and is judged; VmRSS adds the file pages it maps
    # (LMDB's data file, which grows with the metadata of every change until gc, and which
    # the kernel reclaims under pressure), shown for context.
    for label, k, judged in (("daemon RSS (VmRSS)", 0, False),
                             ("daemon RssAnon (its own memory)", 1, True)):
        ok, growth = flat([kb[k] for _, kb in load.rss])
        results.add(c.Row(f"{label}, last quarter vs second", [growth], unit="x",
                          target="<= 1.25x (or +64 MiB)" if judged else "",
                          check=functools.partial(_verdict, ok) if judged else None,
                          absolute=True,
                          note="  ".join(f"{t:.0f}s {kb[k] / 1024:.0f} MiB"
                                         for t, kb in picks)))
    errors = (load.writes.errors + load.reads.errors + load.puts.errors)[:5]
    ok_all = results.print({
        "RSS samples (s: MiB RSS/anon)": " ".join(f"{t:.0f}:{kb[0] / 1024:.0f}/"
                                                  f"{kb[1] / 1024:.0f}" for t, kb in load.rss),
        "commits finished during the run": str(load.finishes),
        **({"first errors": "; ".join(errors)} if errors else {}),
    })
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
