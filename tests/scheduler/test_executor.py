"""The datum seam: a picklable ``DatumTask`` run by the local ``DatumExecutor`` (real
bubblewrap, real store), and the scheduler's state tables checked by ``fsck``."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

from pfsmount.pfs import Pfs
from pfsmount.pfs.files import Data
from pfsmount.pfs.fsck import fsck
from pfsmount.pfs.state import KIND_FILE, Entry
from scheduler.executor import DatumTask, InputRef
from scheduler.local_executor import LocalExecutor
from scheduler.records import DatumResult, Records


def _task(commit: str, digest: str, datum: str, script: str, **kw: object) -> DatumTask:
    return DatumTask(
        pipeline="p", job="j1", datum=datum, files=[f"src=src@{commit}:/a.txt"],
        inputs=[InputRef(name="src", repo="src", commit=commit, path="/a.txt", hash=digest,
                         type="file", inside="/pfs/src/a.txt")],
        cmd=["sh", "-c", script], stdin="", env={"src": "/pfs/src/a.txt"}, **kw)  # type: ignore[arg-type]


def test_a_pickled_task_runs_locally_and_returns_its_manifest_log_and_exit(
        sandboxed_pfs: tuple[Pfs, Path]) -> None:
    pfs, root = sandboxed_pfs
    pfs.repos.create("src")
    commit = pfs.files.put("src@master:/a.txt", Data(b"hello\n")).id
    digest = pfs.files.inspect(f"src@{commit}", "/a.txt").hash
    ok = _task(commit, digest, "d1", "tr a-z A-Z < $src > /pfs/out/up.txt; mkdir "
               "/pfs/out/d; ln -s ../up.txt /pfs/out/d/link; echo said-this; exit 3",
               accept=[3])
    bad = _task(commit, digest, "d2", "echo trying; exit 1", tries=2)
    shipped = [pickle.loads(pickle.dumps(t)) for t in (ok, bad)]
    assert shipped == [ok, bad]

    executor = LocalExecutor(pfs, root, None)  # no mount: inputs are exported copies
    (done, staged), (failed, nothing) = executor.run(shipped, 2)

    assert (done.state, done.code, failed.state, failed.code) == (
        "success", 3, "failure", 1)
    assert "said-this" in done.log
    assert failed.log.count("trying") == 2 and "try 2 of 2" in failed.log
    assert pickle.loads(pickle.dumps(done)) == done
    assert nothing is None and failed.outputs == []
    assert (root / "logs/p/j1/d2.log").read_text().count("exit code 1") == 2
    manifest = dict(done.outputs)
    assert sorted(manifest) == ["d/link", "up.txt"]
    assert manifest["d/link"].ref == b"../up.txt"
    assert staged is not None
    pfs.state.land([staged])  # the content the manifest names is now readable
    up = manifest["up.txt"]
    entry = Entry(up.kind, up.size, up.mode, up.mtime, up.ref)
    assert b"".join(pfs.files.read(entry)) == b"HELLO\n"
    assert not (root / "work/j1").exists()  # its scratch space is gone
    assert fsck(pfs).errors == []


def test_fsck_names_a_datum_result_whose_output_content_is_missing(tmp_path: Path) -> None:
    pfs = Pfs(tmp_path / "root")
    try:
        records = Records(pfs.state)
        gone = Entry(KIND_FILE, 3, 0o644, 0, bytes(32))
        with pfs.state.write() as scope:
            records.put_datum(scope, "p", "spec", "d1", DatumResult(job="j", outputs=[
                ("out/x", gone)]))
            records.pipelines_table.put(scope, b"bad", b"\xc1")
        errors = fsck(pfs).errors
        assert errors == ["pipeline bad: its record cannot be read",
                          "datum p spec d1: the content of its output /out/x is missing"]
    finally:
        pfs.close()


def test_cancel_stops_a_jobs_running_and_waiting_tasks(sandboxed_pfs: tuple[Pfs, Path]) -> None:
    pfs, root = sandboxed_pfs
    pfs.repos.create("src")
    commit = pfs.files.put("src@master:/a.txt", Data(b"x\n")).id
    digest = pfs.files.inspect(f"src@{commit}", "/a.txt").hash
    executor = LocalExecutor(pfs, root, None)
    tasks = [_task(commit, digest, f"d{n}", "echo started; sleep 60") for n in range(3)]
    outcomes = executor.run(tasks, 1)
    executor.cancel("other-job")  # another job's cancel reaches none of these
    log = root / "logs/p/j1/d0.log"

    def stop_once_running() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                log.exists() and "started" in log.read_text()):
            time.sleep(0.05)
        executor.cancel("j1")

    threading.Thread(target=stop_once_running).start()
    started = time.monotonic()
    states = [(o.state, staged) for o, staged in outcomes]
    assert time.monotonic() - started < 45
    assert states == [("stopped", None)] * 3
    assert "[pfsmount] job stopped" in log.read_text()
    assert not (root / "logs/p/j1/d1.log").exists()  # never started
