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
engine and makes the image. How a daemon is started, checked and cleaned up is shared with
the other suites (``Commands`` and ``Mounted`` in tests/conftest.py); the ``pfsd`` here
overrides that of tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import msgspec
import pytest

from pfsmount import Client
from pfsmount.api.pipeline_client import PipelineClient
from tests.conftest import Commands, Mounted, alive, error_line, require_fuse, running, unusable

IMAGE = "pfsmount-test/busybox:latest"
WAIT = 90.0  # seconds a `commit wait` may take before the test fails


def missing(what: str) -> NoReturn:
    """Skip on a developer's machine, fail under CI=true."""
    unusable(what, "CI must run the scheduler tests with it")


def require_bwrap() -> None:
    if shutil.which("bwrap") is None:
        missing("bubblewrap (bwrap) is not installed")


@pytest.fixture
def sandboxed_pfs(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A model over a fresh root, in process, where bwrap runs: for tests of the scheduler's
    parts below the daemon. Yields the model and its root; closes it after."""
    from pfsmount.pfs import Pfs

    require_bwrap()
    root = tmp_path / "root"
    pfs = Pfs(root)
    try:
        yield pfs, root
    finally:
        pfs.close()


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


class Pfsd(Commands, Mounted):
    """One daemon with its mount, and the ``pfsmount`` command pointed at its root."""

    def __init__(self, prefix: str = "psch", parent: str = "/tmp") -> None:
        super().__init__(prefix, parent)
        self.specs = self.root / "specs"
        self.specs.mkdir()

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

    def fails(self, *args: str | os.PathLike[str], match: str | None = None,
              input: bytes | None = None) -> str:
        """A command that must fail as DESIGN says: exit != 0, one ``error:`` line, no
        traceback. Returns that line."""
        r = self.run(*args, input=input)
        return error_line(r, f"pfsmount {' '.join(map(str, args))}", match=match)

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
        p = self.call("file", "get", ref, timeout=60)
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

    def up(self) -> int:
        pid = super().up()
        assert os.path.ismount(self.mnt), f"{self.mnt} is not mounted after up"
        return pid

    def kill9(self) -> None:
        """A crash: SIGKILL the daemon, leaving its mount stale."""
        pid = self.pid
        self.kill()
        assert pid is not None and not alive(pid), f"daemon {pid} survived SIGKILL"

    def down(self) -> None:
        super().down()
        self.check_log()


@contextlib.contextmanager
def serving(prefix: str = "psch", parent: str = "/tmp") -> Iterator[Pfsd]:
    """A daemon with a mount for the length of the block (its root a new directory in
    ``parent``); fsck + down at the end."""
    require_fuse("CI must run the scheduler tests with it")
    require_bwrap()
    with running(Pfsd(prefix, parent)) as d:
        yield d


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
