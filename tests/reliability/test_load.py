"""The load run, bounded for CI: 8 mount writers, 4 mount readers and 2 API putters at once.

``bench/load.py`` is the full run (minutes, with figures); this is its check: for
``PFSMOUNT_LOAD_SECONDS`` (default 24) after an 8 s warm-up, every write that succeeded is in
the finished commit byte for byte, none failed, and the daemon's own memory (RssAnon) stays
flat. Before tree pages were cached by bytes, it grew by about 17 MiB a second here.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pfsmount import Client
from tests.conftest import Mounted, require_fuse, running

SECONDS = float(os.environ.get("PFSMOUNT_LOAD_SECONDS", "24"))
WARM_UP = 8.0
WRITERS, READERS, PUTTERS, NAMES = 8, 4, 2, 400
SIZES = (1024, 4096, 16384, 65536, 200_000, 512 * 1024)


def rss_anon_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


def test_mixed_load_loses_nothing_and_memory_stays_flat() -> None:
    require_fuse("CI must run the mount tests", "pyfuse3")
    with running(Mounted("pfsl")) as d:
        assert d.pid is not None
        pid = d.pid
        with Client(d.root, timeout=120) as c:
            c.create_repo("load")
        branch = d.mnt / "load" / "master"
        stop = threading.Event()
        lock = threading.Lock()
        expected: dict[str, bytes] = {}  # path -> digest of its last successful write
        written: list[str] = []
        failures: list[str] = []
        counts = {"write": 0, "read": 0, "put": 0}

        def succeeded(path: str, data: bytes, kind: str) -> None:
            with lock:
                if path not in expected:
                    written.append(path)
                expected[path] = hashlib.blake2b(data).digest()
                counts[kind] += 1

        def writer(i: int) -> None:
            rng = random.Random(i)
            (branch / f"w{i}").mkdir(exist_ok=True)
            n = 0
            while not stop.is_set():
                path, data = f"w{i}/f{n % NAMES:03d}", rng.randbytes(rng.choice(SIZES))
                try:
                    (branch / path).write_bytes(data)
                except OSError as e:
                    failures.append(f"write {path}: {e}")
                else:
                    succeeded(path, data, "write")
                n += 1

        def reader(i: int) -> None:
            rng = random.Random(100 + i)
            while not stop.is_set():
                with lock:
                    path = rng.choice(written) if written else None
                if path is None:
                    time.sleep(0.05)
                    continue
                try:
                    (branch / path).read_bytes()
                except OSError as e:
                    failures.append(f"read {path}: {e}")
                else:
                    with lock:
                        counts["read"] += 1

        def putter(i: int) -> None:
            rng = random.Random(200 + i)
            n = 0
            with Client(d.root, timeout=120) as client:
                while not stop.is_set():
                    path = f"api{i}/f{n % NAMES:03d}"
                    data = rng.randbytes(rng.choice((1024, 8192, 65536)))
                    try:
                        client.put_file(f"load@master:/{path}", data)
                    except Exception as e:
                        failures.append(f"put {path}: {e}")
                    else:
                        succeeded(path, data, "put")
                    n += 1

        jobs: list[tuple[Callable[[int], None], int]] = [
            *((writer, i) for i in range(WRITERS)), *((reader, i) for i in range(READERS)),
            *((putter, i) for i in range(PUTTERS))]
        threads = [threading.Thread(target=fn, args=(i,), daemon=True) for fn, i in jobs]
        for t in threads:
            t.start()
        time.sleep(WARM_UP)
        samples: list[float] = []
        deadline = time.monotonic() + SECONDS
        finishes = 0
        while time.monotonic() < deadline:
            samples.append(rss_anon_mib(pid))
            time.sleep(1.0)
            if len(samples) % 10 == 0:  # a user sealing a batch of work now and then
                finishes += d.call("commit", "finish", "load/master").returncode == 0
        stop.set()
        for t in threads:
            t.join(timeout=120)
        assert not failures, failures[:5]
        assert min(counts.values()) > 0, counts

        d.call("commit", "finish", "load/master")
        with Client(d.root, timeout=120) as c:
            commit = c.inspect_commit("load@master").id
            lost = [p for p, want in expected.items()
                    if hashlib.blake2b(c.read_file(f"load@{commit}:/{p}")).digest() != want]
        assert lost == [], f"{len(lost)} of {len(expected)} writes lost, e.g. {lost[:3]}"

        n = len(samples)
        second = statistics.mean(samples[n // 4: n // 2])
        last = statistics.mean(samples[3 * n // 4:])
        shown = " ".join(f"{s:.0f}" for s in samples)
        assert last <= max(1.25 * second, second + 100), (
            f"RssAnon grew from {second:.0f} to {last:.0f} MiB; samples (MiB): {shown}; "
            f"{counts}, {finishes} finishes")
