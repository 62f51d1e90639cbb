"""A job holds the disk space of the datums it is running, not of every datum it ran.

Where a datum's inputs are copies (no mount, or Docker under a root daemon), each datum's
copies and its ``/pfs/out`` stayed on disk until the whole job ended: a cross of two inputs
of a thousand files each copied every pair. The real scheduler runs here over a real store
without a mount, and the disk its work directory takes is sampled while the datums run.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from scheduler.engine import Scheduler
from scheduler.spec import parse_specs

MIB = 1 << 20


def used(top: Path) -> int:
    """Bytes of the files below ``top`` (what ``du`` would count, near enough)."""
    total = 0
    for folder, _, files in os.walk(top):
        for name in files:
            with contextlib.suppress(OSError):  # removed while we looked
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def test_a_job_keeps_no_copies_of_the_datums_it_finished(sandboxed_pfs: tuple[Pfs, Path]) -> None:
    pfs, root = sandboxed_pfs
    pfs.repos.create("big")
    data = {f"/f{n}": os.urandom(MIB) for n in range(4)}
    for path, blob in data.items():
        pfs.files.put(f"big@master:{path}", Data(blob))
    spec = {"pipeline": {"name": "copies"}, "input": {"pfs": {"repo": "big", "glob": "/*"}},
            "transform": {"cmd": ["sh", "-c", "cp /pfs/big/* /pfs/out/; sleep 0.5"]}}
    sched = Scheduler(pfs, root, None)
    sched.create_pipeline(parse_specs(json.dumps(spec))[0])
    (job,) = sched.list_jobs("copies")
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, used(root / "work"))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        sched.execute(job.id)
    finally:
        done.set()
        sampler.join()
    job = sched.inspect_job(job.id)
    assert (job.state, job.processed) == ("success", 4), job.error
    for path, blob in data.items():
        assert b"".join(pfs.files.read(pfs.files.open("copies@master", path)[1])) == blob
    # one datum at a time: its input and its output, never the four datums' eight MiB
    assert 0 < peak <= 3 * MIB, f"the job held {peak / MIB:.1f} MiB of scratch"
