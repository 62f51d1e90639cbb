"""A real daemon with a real mount, real bubblewrap and the real Docker engine, for pipelines.

Each test module that needs a daemon gets one: a short root under /tmp (a Unix socket path
must stay under 108 bytes) started with ``pfsmount --root R up --mount R/mnt``. Tests drive it
as a user does, through the ``pfsmount`` command (and the Python client only to load data
fast), and look at what a user sees: command output, ``job inspect --json``, files in output
repos through ``file get`` or the mount. At module teardown ``pfsmount fsck`` must report 0
errors, ``pfsmount down`` must stop the daemon and unmount, and the daemon's log must hold no
traceback; whatever is left is then killed and unmounted.

Missing parts (FUSE, ``bwrap``, a Docker engine with the offline test image) skip the tests
on a developer's machine and fail them under ``CI=true``. ``packaging/dockerd.sh`` starts the
engine and makes the image.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

from pfsmount import Client
from scheduler.client import PipelineClient

PFSMOUNT = Path(sys.executable).with_name("pfsmount")
PROJECT = Path(__file__).resolve().parents[2]
IMAGE = "pfsmount-test/busybox:latest"
WAIT = 90.0  # seconds a `commit wait` may take before the test fails


class Result(NamedTuple):
    code: int
    out: str
    err: str


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PFSMOUNT_ROOT", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def missing(what: str) -> None:
    """Skip on a developer's machine, fail under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI must run the scheduler tests with it)")
    pytest.skip(what)


def require_mount() -> None:
    if not PFSMOUNT.exists():
        pytest.fail(f"{PFSMOUNT} is missing: run `.venv/bin/pip install -e .` first")
    gaps = [p for p in ("/dev/fuse",) if not Path(p).exists()]
    gaps += [t for t in ("fusermount3",) if shutil.which(t) is None]
    if gaps:
        missing("FUSE is not usable here: missing " + ", ".join(gaps))


def require_bwrap() -> None:
    if shutil.which("bwrap") is None:
        missing("bubblewrap (bwrap) is not installed")


def require_docker() -> None:
    if shutil.which("docker") is None:
        missing("the docker command is not installed")
    try:
        p = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True,
                           timeout=30)
    except subprocess.TimeoutExpired:
        missing("the Docker engine does not answer (run packaging/dockerd.sh)")
    if p.returncode != 0:
        why = (p.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        missing(f"no Docker engine with {IMAGE} (run packaging/dockerd.sh): {why}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


class Pfsd:
    """One daemon with its mount, and the ``pfsmount`` command pointed at its root."""

    def __init__(self, prefix: str = "psch") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.mnt = self.root / "mnt"
        self.mnt.mkdir()
        self.specs = self.root / "specs"
        self.specs.mkdir()
        self.pid: int | None = None
        self.pids: set[int] = set()

    # -- specs ------------------------------------------------------------------------------

    @staticmethod
    def spec(name: str, cmd: list[str] | str, inp: dict[str, Any], **extra: Any
             ) -> dict[str, Any]:
        """A 2.x pipeline spec; a ``str`` cmd runs as ``sh`` stdin lines."""
        transform: dict[str, Any] = (
            {"cmd": ["sh"], "stdin": [cmd]} if isinstance(cmd, str) else {"cmd": cmd})
        if "image" in extra:
            transform["image"] = extra.pop("image")
        if "accept_return_code" in extra:
            transform["accept_return_code"] = extra.pop("accept_return_code")
        return {"pipeline": {"name": name}, "transform": transform, "input": inp, **extra}

    @staticmethod
    def pin(repo: str, glob: str = "/*", **extra: Any) -> dict[str, Any]:
        """A ``pfs`` input."""
        return {"pfs": {"repo": repo, "glob": glob, **extra}}

    # -- the command --------------------------------------------------------------------------

    def run(self, *args: str | os.PathLike[str], input: bytes | None = None,
            timeout: float = 120) -> Result:
        p = subprocess.run([str(PFSMOUNT), "--root", str(self.root), *map(str, args)],
                           input=input, capture_output=True, timeout=timeout, env=_env(),
                           cwd=PROJECT, stdin=None if input is not None else subprocess.DEVNULL)
        return Result(p.returncode, p.stdout.decode(errors="replace"),
                      p.stderr.decode(errors="replace"))

    def ok(self, *args: str | os.PathLike[str], input: bytes | None = None,
           timeout: float = 120) -> str:
        r = self.run(*args, input=input, timeout=timeout)
        assert r.code == 0, (f"pfsmount {' '.join(map(str, args))} exited {r.code}: {r.err}"
                             f"\n{self.log_tail()}")
        assert "Traceback" not in r.err, r.err
        return r.out

    def json(self, *args: str | os.PathLike[str]) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str | os.PathLike[str], match: str | None = None,
              input: bytes | None = None) -> str:
        """A command that must fail as DESIGN says: exit != 0, one ``error:`` line, no
        traceback. Returns that line."""
        r = self.run(*args, input=input)
        what = f"pfsmount {' '.join(map(str, args))}"
        assert r.code != 0, f"{what} succeeded but should have failed: {r.out}"
        assert "Traceback" not in r.err, f"{what} printed a traceback:\n{r.err}"
        lines = r.err.splitlines()
        assert len(lines) == 1, f"{what} printed {len(lines)} lines on stderr:\n{r.err}"
        assert lines[0].startswith("error: "), lines[0]
        if match is not None:
            assert re.search(match, lines[0]), f"{lines[0]!r} does not match {match!r}"
        return lines[0]

    # -- shortcuts a user would type ------------------------------------------------------------

    def spec_file(self, *specs: dict[str, Any], yaml_text: str | None = None) -> Path:
        path = self.specs / f"spec{len(list(self.specs.iterdir()))}.json"
        path.write_text(yaml_text if yaml_text is not None
                        else "\n".join(json.dumps(s, indent=2) for s in specs))
        return path

    def create(self, *specs: dict[str, Any]) -> str:
        """``pfsmount pipeline create -f FILE`` with ``specs`` back to back in FILE."""
        return self.ok("pipeline", "create", "-f", self.spec_file(*specs))

    def put(self, repo: str, files: Mapping[str, bytes | str] | None = None,
            delete: tuple[str, ...] = (), branch: str = "master") -> str:
        """One commit on ``repo@branch`` putting ``files`` and deleting ``delete``; its id.
        (The Python client, for speed: loading data is not what these tests check.)"""
        with self.api() as c:
            c.start_commit(repo, branch)
            for path, data in (files or {}).items():
                c.put_file(f"{repo}@{branch}:/{path.lstrip('/')}",
                           data.encode() if isinstance(data, str) else data)
            for path in delete:
                c.delete_file(f"{repo}@{branch}:/{path.lstrip('/')}", recursive=True)
            return c.finish_commit(f"{repo}@{branch}").id

    def repos(self, *names: str) -> None:
        with self.api() as c:
            for name in names:
                c.create_repo(name)

    def wait(self, ref: str) -> dict[str, str]:
        """Wait for everything downstream of ``ref``: output repo -> commit id. (The client,
        for speed; tests of ``commit wait`` itself run the command.)"""
        with self.api() as c:
            return {o.repo: o.id for o in c.wait_commit(ref, WAIT)}

    def cli_wait(self, *args: str) -> dict[str, str]:
        """``pfsmount commit wait REF --json`` (or an alias): output repo -> commit id."""
        out = self.ok(*(args if len(args) > 1 else ("commit", "wait", *args)), "--timeout",
                      str(WAIT), "--json", timeout=WAIT + 30)
        return {c["repo"]: c["id"] for c in json.loads(out)}

    def jobs(self, pipeline: str) -> list[dict[str, Any]]:
        """``job list -p P --json``, newest first."""
        jobs: list[dict[str, Any]] = self.json("job", "list", "-p", pipeline)
        return jobs

    def last_job(self, pipeline: str) -> dict[str, Any]:
        """The newest job of ``pipeline`` as ``job list --json`` shows it."""
        jobs = self.jobs(pipeline)
        assert jobs, f"pipeline {pipeline} has no job"
        return jobs[0]

    def quick_job(self, pipeline: str) -> dict[str, Any]:
        """The newest job of ``pipeline``, the same record as ``job list --json`` prints, read
        through the client (a command costs about a second; the CLI is checked elsewhere)."""
        with self.api() as c:
            jobs = PipelineClient(c).jobs(pipeline)
        assert jobs, f"pipeline {pipeline} has no job"
        job: dict[str, Any] = msgspec.to_builtins(jobs[0])
        return job

    def head(self, repo: str, branch: str = "master") -> str | None:
        with self.api() as c:
            return next((b.head for b in c.list_branches(repo) if b.name == branch), None)

    def get(self, ref: str) -> bytes:
        p = subprocess.run([str(PFSMOUNT), "--root", str(self.root), "file", "get", ref],
                           capture_output=True, timeout=60, env=_env(),
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"file get {ref}: {p.stderr.decode(errors='replace')}"
        return p.stdout

    def tree(self, repo: str, at: str = "master") -> dict[str, bytes]:
        """Every file of ``repo@at`` as seen through the mount: path -> content."""
        top = self.mnt / repo / at
        assert top.is_dir(), f"{top} is not a directory"
        return {str(p.relative_to(top)): p.read_bytes()
                for p in sorted(top.rglob("*")) if p.is_file()}

    def api(self) -> Client:
        return Client(self.root, timeout=120)

    # -- lifetime -----------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return (self.root / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "daemon.log:\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def up(self) -> int:
        r = self.run("up", "--mount", self.mnt, timeout=90)
        assert r.code == 0, f"pfsmount up exited {r.code}: {r.err}\n{self.log_tail()}"
        m = re.search(r"\(pid (\d+)\)", r.out)
        assert m and "mounted at" in r.out, f"pfsmount up printed {r.out!r}"
        self.pid = int(m.group(1))
        self.pids.add(self.pid)
        assert os.path.ismount(self.mnt), f"{self.mnt} is not mounted after up"
        return self.pid

    def kill9(self) -> None:
        """A crash: SIGKILL the daemon, leaving its mount stale."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(self.pid):
            assert time.monotonic() < deadline, f"daemon {self.pid} survived SIGKILL"
            time.sleep(0.02)

    def check_fsck(self) -> None:
        r = self.run("fsck")
        assert r.code == 0 and re.search(r"\b0 errors\b", r.out), (
            f"fsck exited {r.code}:\n{r.out}{r.err}\n{self.log_tail()}")

    def down(self) -> None:
        r = self.run("down", timeout=60)
        assert r.code == 0, f"pfsmount down exited {r.code}: {r.err}"
        deadline = time.monotonic() + 15
        while any(alive(p) for p in self.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in self.pids), "the daemon outlived `pfsmount down`"
        assert not os.path.ismount(self.mnt), f"{self.mnt} is still mounted after down"
        assert "Traceback" not in self.log_text(), (
            f"the daemon logged a traceback:\n{self.log_text()[-4000:]}")

    def cleanup(self) -> None:
        if os.path.ismount(self.mnt) or not os.path.exists(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True,
                           timeout=30, check=False)
        for pid in self.pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not os.path.ismount(self.mnt):
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def serving(prefix: str = "psch") -> Iterator[Pfsd]:
    """A daemon with a mount for the length of the block; fsck + down at the end."""
    require_mount()
    require_bwrap()
    d = Pfsd(prefix)
    try:
        d.up()
        yield d
        d.check_fsck()
        d.down()
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def pfsd() -> Iterator[Pfsd]:
    """One daemon for the whole module; tests keep to repos and pipelines of their own."""
    with serving() as d:
        yield d


@pytest.fixture(scope="session")
def docker_ready() -> None:
    require_docker()


@pytest.fixture
def own_pfsd() -> Iterator[Pfsd]:
    """A daemon of the test's own, for tests that kill it."""
    with serving("psrs") as d:
        yield d


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A read through a hung mount does not return to Python, so a signal-based timeout
    would not fire: these tests time out by thread."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(240, method="thread"))
