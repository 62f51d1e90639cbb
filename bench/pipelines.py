"""Pipelines: per-datum overhead of each runner, an incremental one-file job, and job start
on a big input.

One daemon with a mount (``pfsmount up --mount M``, not timed; the scheduler hands datums
their inputs through the mount, as in normal use). Every pipeline reads its repo with glob
``/*`` (one datum per top-level file) and has ``parallelism_spec.constant`` 1, so the times
are per-datum latency, not throughput. Sizes are for the default run; --quick in brackets.

1. Per-datum overhead: ``"cmd": ["true"]`` over 1,000 [200] one-line files, once in the
   bubblewrap sandbox (no image) and once in Docker (``pfsmount-test/busybox:latest``).
   Value: (job ``finished`` - ``started``) / datums; each run is a new pipeline (a rerun
   would skip every datum). Targets: sandbox < 30 ms, Docker < 150 ms per datum.
   Baselines, per spawn, same run: ``bwrap --ro-bind / / true`` 100 times in a bash loop;
   for information ``bwrap`` with the runner's own command line (``SandboxRunner.argv`` of a
   datum with one input file: it runs wherever the runner does, with or without ``/pfs`` on
   the host) 100 times. Docker, each in a bash loop or a Python loop, same run:
   ``docker run --rm --network none IMAGE true`` (20 times), ``docker exec C true`` into one
   running container (50 times), and the Engine API's exec of ``true`` (create, start,
   inspect: the runner's three requests) 100 times, through the Docker SDK and through httpx
   on the engine's socket (the runner's way, chosen by these rows).
2. Incremental: an input of 10,000 [2,000] one-line files and a sandbox pipeline whose datum
   runs ``sh -c 'cp -r /pfs/inc/* /pfs/out/'`` (copies its one file). After the first job
   (shown for information), each run puts one new file with ``pfsmount file put`` and waits
   with ``pfsmount flush-commit inc@master``: the time from before the put until
   flush-commit returns, i.e. until the new output commit exists (two CLI start-ups
   included). Target < 2 s. The job's processed/skipped counts are shown (the target also
   needs processed == 1), with where the time went from the job's own timestamps; the same
   through the Python API (``Client.put_file`` + ``wait_commit``) for information.
   Context baseline: one ``bwrap`` spawn running the same ``cp`` of one file.
3. Job start on a big input: a commit of 200,000 [20,000] one-line files; a pipeline whose
   datum prints ``date +%s.%N`` (into its log). Time from before ``pfsmount create-pipeline``
   until the earliest timestamp any datum printed (read with the logs API while the job
   runs), then ``pfsmount job stop`` (waited for at most 30 s). Target < 10 s. Also shown:
   when the job record said ``started``, and when ``processed > 0`` was first seen (the job
   saves progress about every 0.5 s). Each run uses a store of its own (built with one
   ``file put -r``, not timed) that is thrown away after ``pfsmount down``: see
   ``job_start`` for why. Context baseline: ``ls -U DIR | wc -l`` of the files on disk, cold.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as c
from mount import MountedDaemon, fresh_mounted, q  # bench/mount.py

IMAGE = "pfsmount-test/busybox:latest"
RUNNER_FLAGS = "bwrap true (runner flags)"


def runner_bwrap(cmd: list[str], out_dir: Path, one_file: Path, hidden: tuple[Path, ...]
                 ) -> str:
    """The sandbox runner's own command line for a datum with ``one_file`` at /pfs/in/."""
    from scheduler.runners import SandboxRunner, Task

    task = Task(cmd=cmd, stdin="", env={}, binds=[(one_file, f"/pfs/in/{one_file.name}")],
                out=out_dir, log=out_dir.parent / "log")
    return shlex.join(SandboxRunner(hidden=hidden).argv(task))


def engine_exec(n: int) -> dict[str, float]:
    """Per exec of ``true`` in one running container through the Engine API: the Docker
    SDK's three calls (as the runner makes them) and the same three requests with httpx on
    the socket. The container runs ``sleep`` with the runner's hardening flags."""
    import docker
    import httpx

    client = docker.from_env()
    container = client.containers.run(
        IMAGE, ["sleep", "3600"], detach=True, init=True, network_mode="none",
        cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
        user="65534:65534")
    out: dict[str, float] = {}
    try:
        def sdk() -> None:
            for _ in range(n):
                ex = client.api.exec_create(container.id, ["true"])["Id"]
                for _chunk in client.api.exec_start(ex, stream=True):
                    pass
                assert client.api.exec_inspect(ex)["ExitCode"] == 0

        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        transport = httpx.HTTPTransport(uds=host.removeprefix("unix://"))
        with httpx.Client(transport=transport, base_url="http://docker") as h:
            def raw() -> None:
                for _ in range(n):
                    ex = h.post(f"/containers/{container.id}/exec",
                                json={"Cmd": ["true"], "AttachStdout": True,
                                      "AttachStderr": True}).json()["Id"]
                    h.post(f"/exec/{ex}/start", json={"Detach": False, "Tty": False},
                           timeout=60).read()
                    assert h.get(f"/exec/{ex}/json").json()["ExitCode"] == 0

            sdk()
            raw()  # warm both
            out["engine API exec true (SDK)"] = c.timed(sdk)[0] / n
            out["engine API exec true (httpx)"] = c.timed(raw)[0] / n
    finally:
        container.remove(force=True)
    return out


def make_lines(src: Path, count: int) -> Path:
    """``count`` one-line files in one directory (reused when already complete)."""
    marker = src / f".complete-{count}"
    files = src / "files"
    if marker.exists():
        return files
    c.console.print(f"generating {count:,} one-line files under {files}")
    c.fresh_dir(src)
    files.mkdir()
    for i in range(count):
        with open(files / f"f{i:06d}.txt", "w") as f:
            f.write(f"line {i}\n")
    marker.touch()
    return files


def spec(name: str, repo: str, cmd: list[str], image: str = "") -> dict[str, Any]:
    transform: dict[str, Any] = {"cmd": cmd}
    if image:
        transform["image"] = image
    return {"pipeline": {"name": name}, "transform": transform,
            "parallelism_spec": {"constant": 1},
            "input": {"pfs": {"repo": repo, "glob": "/*"}}}


class Bench:
    """The daemon, its clients and the spec files of one benchmark invocation."""

    def __init__(self, daemon: MountedDaemon, specs: Path) -> None:
        try:
            from pfsmount.api.pipeline_client import PipelineClient
        except ImportError:  # before it moved into the api layer
            from scheduler.client import PipelineClient  # type: ignore[no-redef]

        self.daemon = daemon
        self.specs = specs
        self.client = daemon.client()
        self.pipelines = PipelineClient(self.client)

    def create(self, body: dict[str, Any]) -> float:
        """``pfsmount create-pipeline -f``; returns time.time() from just before it."""
        path = self.specs / f"{body['pipeline']['name']}.json"
        path.write_text(json.dumps(body))
        t0 = time.time()
        self.daemon.pfs("create-pipeline", "-f", str(path))
        return t0

    def only_job(self, pipeline: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.pipelines.jobs(pipeline)
            if jobs:
                return jobs[0]
            time.sleep(0.05)
        raise RuntimeError(f"no job for pipeline {pipeline} after {timeout:.0f} s")

    def run_to_end(self, pipeline: str) -> Any:
        job = self.only_job(pipeline)
        job = self.pipelines.wait_job(job.id)
        if job.state != "success":
            raise RuntimeError(f"job {job.id} of {pipeline} ended {job.state}: {job.error}")
        return job

    def delete(self, pipeline: str) -> None:
        self.daemon.pfs("pipeline", "delete", pipeline)

    def close(self) -> None:
        self.client.close()


def per_spawn(cmd: str, times: int) -> float:
    return c.timed_cmd(f"for i in $(seq {times}); do {cmd}; done") / times


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--only", default="overhead,docker,incremental,start",
                   help="comma-separated sections (default all; 'docker' is the Docker half "
                        "of the overhead section)")
    args = c.finish_args(p.parse_args())
    only = set(args.only.split(","))
    n_noop = 200 if args.quick else 1000
    n_inc = 2_000 if args.quick else 10_000
    n_big = 20_000 if args.quick else 200_000
    base = args.workdir / "pipelines"
    base.mkdir(parents=True, exist_ok=True)
    c.same_disk_note(args.workdir)

    lines = make_lines(base / "data" / f"lines-{n_noop}", n_noop) if only & {
        "overhead", "docker"} else None
    inc = make_lines(base / "data" / f"lines-{n_inc}", n_inc) if "incremental" in only else None
    big = make_lines(base / "data" / f"lines-{n_big}", n_big) if "start" in only else None
    scratch = c.fresh_dir(base / "scratch")
    samples: dict[str, list[float]] = {}
    info: dict[str, str] = {}
    notes_jobs: list[str] = []

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    docker_ok = "docker" in only and c.run(["docker", "image", "inspect", IMAGE],
                                           check=False).returncode == 0
    if "docker" in only and not docker_ok:
        c.notes.append(f"[red]Docker or image {IMAGE} missing (bash packaging/dockerd.sh): "
                       "Docker rows skipped[/]")

    daemon: MountedDaemon | None = None
    bench: Bench | None = None
    try:
        daemon = fresh_mounted(base / "root", base / "m")
        bench = Bench(daemon, c.fresh_dir(scratch / "specs"))
        mnt = daemon.mountpoint
        if lines is not None:
            daemon.pfs("create-repo", "lines")
            daemon.pfs("file", "put", "-r", "lines@master:/", str(lines))
        if inc is not None:
            daemon.pfs("create-repo", "inc")
            daemon.pfs("file", "put", "-r", "inc@master:/", str(inc))
            t0 = bench.create(spec("copy", "inc", ["sh", "-c", "cp -r /pfs/inc/* /pfs/out/"]))
            first = bench.run_to_end("copy")
            info[f"incremental: first job ({n_inc:,} datums)"] = (
                f"{first.finished - first.started:.1f} s, "
                f"{1000 * (first.finished - first.started) / first.datums:.1f} ms/datum; "
                f"create-pipeline to output {first.finished - t0:.1f} s")

        # a datum's /pfs/out and input, for the runner-flags baseline
        out_dir = c.fresh_dir(scratch / "out")
        one = (inc or lines or big or scratch)
        one_file = next(one.iterdir()) if one.is_dir() else one
        hidden = (daemon.root, mnt)
        bwrap_true = runner_bwrap(["true"], out_dir, one_file, hidden)
        bwrap_cp = runner_bwrap(["sh", "-c", "cp -r /pfs/in/* /pfs/out/"], out_dir, one_file,
                                hidden)

        for n in range(args.runs):
            c.console.print(f"run {n + 1}/{args.runs}")
            first_run = n == 0 and args.profile
            if lines is not None:
                if "overhead" in only:
                    add("bwrap true", per_spawn("bwrap --ro-bind / / true", 100))
                    add(RUNNER_FLAGS, per_spawn(bwrap_true, 100))
                    name = f"noop-sb-{n}"
                    with c.profiled(daemon.pid, "daemon: sandbox no-op datums", first_run):
                        bench.create(spec(name, "lines", ["true"]))
                        job = bench.run_to_end(name)
                    add("sandbox per datum", (job.finished - job.started) / job.datums)
                    if job.processed != n_noop:
                        raise RuntimeError(f"{name}: processed {job.processed} of {n_noop}")
                    bench.delete(name)
                if docker_ok:
                    add("docker run true", per_spawn(
                        f"docker run --rm --network none {IMAGE} true >/dev/null", 20))
                    cid = c.run(["docker", "run", "-d", "--init", "--network", "none",
                                 IMAGE, "sleep", "3600"]).stdout.strip()
                    try:
                        add("docker exec true", per_spawn(f"docker exec {cid} true", 50))
                    finally:
                        c.run(["docker", "rm", "-f", cid], check=False)
                    for key, value in engine_exec(100).items():
                        add(key, value)
                    name = f"noop-dk-{n}"
                    with c.profiled(daemon.pid, "daemon: Docker no-op datums", first_run):
                        bench.create(spec(name, "lines", ["true"], IMAGE))
                        job = bench.run_to_end(name)
                    add("docker per datum", (job.finished - job.started) / job.datums)
                    if job.processed != n_noop:
                        raise RuntimeError(f"{name}: processed {job.processed} of {n_noop}")
                    bench.delete(name)

            if inc is not None:
                add("bwrap cp one file", per_spawn(bwrap_cp, 20))
                for how in ("cli", "api"):
                    new = scratch / f"new-{how}-{n}.txt"
                    new.write_text(f"new {how} {n}\n")
                    dest = f"inc@master:/{new.name}"
                    with c.profiled(daemon.pid, f"daemon: incremental job ({how})",
                                    first_run and how == "cli"):
                        t0 = time.time()
                        if how == "cli":
                            t_put, _ = c.timed(functools.partial(
                                daemon.pfs, "file", "put", dest, str(new)))
                            daemon.pfs("flush-commit", "inc@master")
                        else:
                            t_put, _ = c.timed(functools.partial(
                                bench.client.put_file, dest, new))
                            bench.client.wait_commit("inc@master")
                        t1 = time.time()
                    job = bench.pipelines.jobs("copy")[0]
                    got = (mnt / "copy" / "master" / new.name).read_text()
                    if got != new.read_text():
                        raise RuntimeError(f"copy/master/{new.name} holds {got!r}")
                    assert job.started is not None and job.finished is not None
                    add(f"incremental {how}", t1 - t0)
                    add(f"incremental {how} processed", job.processed)
                    notes_jobs.append(
                        f"incremental {how} run {n + 1}: processed {job.processed}, skipped "
                        f"{job.skipped} of {job.datums}; put {t_put:.2f} s, put->job created "
                        f"{job.created - t0:.2f} s, created->started "
                        f"{job.started - job.created:.2f} s, started->finished "
                        f"{job.finished - job.started:.2f} s, finished->flush returned "
                        f"{t1 - job.finished:.2f} s")

            if big is not None:
                c.drop_caches()
                add("ls -U native", c.timed_cmd(f"ls -U {q(big)} | wc -l"))
                for key, value in job_start(base, big, n, first_run, info, notes_jobs).items():
                    add(key, value)
            daemon.check(f"run {n + 1}")
    finally:
        if bench is not None:
            bench.close()
        if daemon is not None:
            daemon.down()
        shutil.rmtree(scratch, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base / "root", ignore_errors=True)

    res = c.Results(f"pipelines: medians of {args.runs} run(s), parallelism 1, glob /*")

    def row(key: str, unit: str = "s", **kw: Any) -> None:
        if key in samples:
            res.add(c.Row(key, samples[key], unit=unit, **kw))

    row("bwrap true", note="baseline: bwrap --ro-bind / / true, per spawn (100 in a loop)")
    row(RUNNER_FLAGS, baseline="bwrap true",
        note="info: SandboxRunner.argv of a one-file datum")
    row("sandbox per datum", baseline="bwrap true", target="< 30 ms", absolute=True,
        check=lambda v: v < 0.030, note=f'"cmd": ["true"], {n_noop:,} datums, job time / datums')
    row("docker run true", note="baseline: docker run --rm IMAGE true, per run (20 in a loop)")
    row("docker exec true", baseline="docker run true",
        note="baseline: docker exec C true (CLI), per exec (50 in a loop)")
    row("engine API exec true (SDK)", baseline="docker exec true",
        note="info: exec create+start+inspect through the Docker SDK, 100 in a loop")
    row("engine API exec true (httpx)", baseline="docker exec true",
        note="info: the same three requests, httpx on the socket (the runner's way)")
    row("docker per datum", baseline="docker exec true", target="< 150 ms", absolute=True,
        check=lambda v: v < 0.150, note=f"{IMAGE}, {n_noop:,} datums, one worker container")
    row("bwrap cp one file", note="baseline: one datum's cp in bwrap, runner flags")
    row("incremental cli", baseline="bwrap cp one file", target="< 2 s", absolute=True,
        check=lambda v: v < 2, note=f"file put + flush-commit (CLI) over {n_inc:,} datums")
    row("incremental cli processed", unit="datums", target="== 1", check=lambda v: v == 1,
        absolute=True, note="processed datums of that job")
    row("incremental api", baseline="bwrap cp one file",
        note="info: Client.put_file + wait_commit, no CLI start-up")
    row("incremental api processed", unit="datums", target="== 1", check=lambda v: v == 1,
        absolute=True)
    row("ls -U native", note=f"baseline: ls -U | wc -l of the {n_big:,} files, cold")
    row("create-pipeline returned", note="info: the CLI command")
    row("job started", baseline="ls -U native", note="info: the job record's started")
    row("first datum ran", baseline="ls -U native", target="< 10 s", absolute=True,
        check=lambda v: v < 10, note=f"earliest date +%s.%N a datum printed, {n_big:,} files")
    row("processed > 0 seen", baseline="ls -U native",
        note="info: polled job inspect (progress saved ~every 0.5 s)")
    row("job stop", note=f"info: pfsmount job stop (CLI), runs that ended within "
        f"{STOP_WAIT:.0f} s")
    for line in notes_jobs:
        c.notes.append(line)
    res.print(info)


STOP_WAIT = 30.0  # seconds to wait for `pfsmount job stop` before giving up on it


def job_start(base: Path, big: Path, n: int, profile: bool, info: dict[str, str],
              notes_jobs: list[str]) -> dict[str, float]:
    """One run of section 3, in a daemon and store of its own.

    A stopped job still takes every queued datum through the runner (which sees the cancel
    flag only after it spawned), so ``job stop`` on a big input can take many minutes and
    the daemon would then rerun the unfinished job on its next start. So each run builds a
    fresh store, waits at most STOP_WAIT for the stop, and ends with ``pfsmount down``
    (which SIGKILLs the daemon after 30 s); the store is thrown away.
    """
    out: dict[str, float] = {}
    daemon = fresh_mounted(base / "root-start", base / "ms")
    bench: Bench | None = None
    try:
        daemon.pfs("create-repo", "big")
        t, _ = c.timed(lambda: daemon.pfs("file", "put", "-r", "big@master:/", str(big)))
        info[f"job start: build, file put -r (run {n + 1})"] = f"{t:.1f} s"
        bench = Bench(daemon, c.fresh_dir(base / "scratch" / "specs-start"))
        name = f"start-{n}"
        with c.profiled(daemon.pid, "daemon: job start on a big input", profile):
            t0 = bench.create(spec(name, "big", ["sh", "-c", "date +%s.%N"]))
            out["create-pipeline returned"] = time.time() - t0
            first_ts, started, seen = watch_start(bench, name, t0)
        out["job started"] = started - t0
        out["first datum ran"] = first_ts - t0
        out["processed > 0 seen"] = seen - t0
        job = bench.pipelines.jobs(name)[0]
        at_stop = bench.pipelines.job(job.id).processed
        t1 = time.perf_counter()
        try:
            subprocess.run(daemon.cli("job", "stop", job.id), capture_output=True,
                           timeout=STOP_WAIT, check=True)
            out["job stop"] = time.perf_counter() - t1
            stopped = "stopped"
        except subprocess.TimeoutExpired:
            stopped = f"still stopping after {STOP_WAIT:.0f} s"
        job = bench.pipelines.job(job.id)
        notes_jobs.append(
            f"job start run {n + 1}: `job stop` {stopped}; job {job.state}, "
            f"{at_stop} processed when stop was called; now {job.processed} processed, "
            f"{job.failed} failed (cancelled) of {job.datums:,} datums")
    finally:
        if bench is not None:
            bench.close()
        t_down, _ = c.timed(daemon.down)
        if t_down > 20:
            notes_jobs.append(f"job start run {n + 1}: pfsmount down took {t_down:.0f} s "
                              "(the job's thread kept the daemon up)")
        shutil.rmtree(base / "root-start", ignore_errors=True)
    return out


def watch_start(bench: Bench, name: str, t0: float, timeout: float = 300
                ) -> tuple[float, float, float]:
    """Poll the job and the datums' logs until a datum printed its timestamp.

    Returns (earliest datum timestamp, job started, when processed > 0 was first seen);
    the last two keep being watched for a moment after the first datum is seen.
    """
    deadline = time.monotonic() + timeout
    first_ts = started = seen = None
    job_id = None
    while time.monotonic() < deadline:
        if job_id is None:
            jobs = bench.pipelines.jobs(name)
            job_id = jobs[0].id if jobs else None
        if job_id is not None:
            job = bench.pipelines.job(job_id)
            if job.started is not None:
                started = job.started
            if seen is None and job.processed > 0:
                seen = time.time()
            if job.state in ("failure", "killed", "success"):
                raise RuntimeError(f"job {job_id} ended {job.state} early: {job.error}")
            if started is not None and first_ts is None:
                stamps = [float(ln) for ln in b"".join(bench.pipelines.logs(name, job_id))
                          .decode(errors="replace").splitlines() if _is_float(ln)]
                if stamps:
                    first_ts = min(stamps)
        if first_ts is not None and started is not None and seen is not None:
            return first_ts, started, seen
        time.sleep(0.05)
    raise RuntimeError(f"pipeline {name}: no datum ran within {timeout:.0f} s "
                       f"(started={started is not None}, processed seen={seen is not None})")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
