"""A real FUSE mount per test module, driven the way a user drives it.

Each module gets its own daemon: a short root under /tmp (a Unix socket path must stay under
108 bytes), started with ``pfsmount --root R up --mount R/mnt``. After every test the harness
checks that the mount is still a mount point and that the daemon process is still alive:
pyfuse3 ends ``main()`` on any stray exception, the filesystem then vanishes and programs
write silently into the empty directory underneath, so exit codes alone prove nothing.

A watchdog lazily unmounts and kills the daemon if one test runs far too long, so a hung
FUSE request turns into failing system calls instead of a frozen test run. At module
teardown ``pfsmount fsck`` must report 0 errors, then ``pfsmount down`` must unmount; if it
cannot, the mount is detached with ``fusermount3 -u -z`` and the daemon killed.

Without FUSE (no /dev/fuse, no fusermount3, no pyfuse3) the tests skip, except under
``CI=true``, where they fail: CI must have a real mount.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfsmount.api.client import Client
from pfsmount.pfs.model import Commit

PFSMOUNT = Path(sys.executable).with_name("pfsmount")
PROJECT = Path(__file__).resolve().parents[2]
# Seconds one test may take before the watchdog tears the mount down (the long differential
# run, PFSMOUNT_LONG_DIFF=1, is allowed an hour).
LONG = os.environ.get("PFSMOUNT_LONG_DIFF") == "1"
TEST_DEADLINE = 3600.0 if LONG else 150.0
_FUSE_DIR = Path(__file__).resolve().parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PFSMOUNT_ROOT", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def require_fuse() -> None:
    """Skip without FUSE on a developer's machine; fail under CI=true."""
    missing = []
    if not Path("/dev/fuse").exists():
        missing.append("/dev/fuse")
    if shutil.which("fusermount3") is None:
        missing.append("fusermount3")
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        missing.append("pyfuse3")
    if not PFSMOUNT.exists():
        pytest.fail(f"{PFSMOUNT} is missing: run `.venv/bin/pip install -e .` first")
    if missing:
        message = "FUSE is not usable here: missing " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must run the mount tests)")
        pytest.skip(message)


def proc_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


class Mount:
    """One daemon with its mount, and the ``pfsmount`` command pointed at its root."""

    def __init__(self, prefix: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.mnt = self.root / "mnt"
        self.mnt.mkdir()
        self.pid: int | None = None
        self.pids: set[int] = set()
        self._names = itertools.count(1)
        self.broken: str | None = None  # why the mount is known dead, for later tests

    # -- the command --------------------------------------------------------------------------

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return [str(PFSMOUNT), "--root", str(self.root), *map(str, args)]

    def run(self, *args: str | os.PathLike[str], input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.argv(*args), input=input, capture_output=True,
                              timeout=timeout, env=_env(), cwd=PROJECT,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def ok(self, *args: str | os.PathLike[str], input: bytes | None = None,
           timeout: float = 120) -> str:
        p = self.run(*args, input=input, timeout=timeout)
        assert p.returncode == 0, (
            f"pfsmount {' '.join(map(str, args))} exited {p.returncode}: "
            f"{p.stderr.decode(errors='replace')}\n{self.log_tail()}")
        return p.stdout.decode(errors="replace")

    def cli_get(self, ref: str) -> bytes:
        """``pfsmount file get REF`` as bytes."""
        p = self.run("file", "get", ref)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        return p.stdout

    # -- the Python API (no process start per call: the CLI costs ~0.3-1 s a command) ---------

    def api(self) -> Client:
        return Client(self.root, timeout=120)

    def get(self, ref: str) -> bytes:
        with self.api() as c:
            return c.read_file(ref)

    def put(self, ref: str, data: bytes) -> str:
        """Put ``data`` at ``ref``; the id of the commit it landed in."""
        with self.api() as c:
            return c.put_file(ref, data).id

    def finish(self, ref: str) -> str:
        with self.api() as c:
            return c.finish_commit(ref).id

    def commits(self, repo: str) -> list[Commit]:
        with self.api() as c:
            return c.list_commits(repo)

    def new_repo(self, prefix: str = "r") -> str:
        """A fresh input repo for one test, so tests in a module do not see each other."""
        name = f"{prefix}{next(self._names)}"
        with self.api() as c:
            c.create_repo(name)
        return name

    def branch(self, repo: str, branch: str = "master") -> Path:
        return self.mnt / repo / branch

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.root / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no daemon.log)"
        return "daemon.log:\n" + "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return (self.root / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- lifetime -----------------------------------------------------------------------------

    def up(self) -> int:
        p = self.run("up", "--mount", self.mnt, timeout=90)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, (
            f"pfsmount up exited {p.returncode}: {p.stderr.decode(errors='replace')}\n"
            f"{self.log_tail()}")
        m = re.search(r"\(pid (\d+)\)", out)
        assert m, f"pfsmount up printed {out!r}"
        assert "mounted at" in out, out
        self.pid = int(m.group(1))
        self.pids.add(self.pid)
        self.broken = None
        assert self.wait_mounted(), f"{self.mnt} is not a mount point after up\n{self.log_tail()}"
        return self.pid

    def wait_mounted(self, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_mounted():
                return True
            time.sleep(0.05)
        return False

    def is_mounted(self) -> bool:
        """``mountpoint -q`` in a subprocess with a timeout: a hung mount answers False."""
        try:
            return subprocess.run(["mountpoint", "-q", str(self.mnt)], timeout=15,
                                  capture_output=True).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def health(self) -> str | None:
        """What is wrong with the mount now, or None: the daemon must be alive and the mount
        must answer (``mountpoint -q`` and a stat of the root through ``os.path.ismount``)."""
        if self.pid is None or not proc_alive(self.pid):
            return f"the daemon (pid {self.pid}) is gone\n{self.log_tail()}"
        if not self.is_mounted():
            return f"{self.mnt} is no longer a mount point\n{self.log_tail()}"
        if not os.path.ismount(self.mnt):
            return f"os.path.ismount({self.mnt}) is False\n{self.log_tail()}"
        return None

    def kill(self) -> None:
        """SIGKILL the daemon (a crash), leaving its mount stale."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while proc_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def abort(self) -> None:
        """Detach the mount and kill the daemon: ends any request hanging on it."""
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True,
                       timeout=30, check=False)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def down(self) -> None:
        p = self.run("down", timeout=60)
        assert p.returncode == 0, f"pfsmount down exited {p.returncode}: {p.stderr!r}"
        deadline = time.monotonic() + 15
        while any(proc_alive(pid) for pid in self.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(proc_alive(pid) for pid in self.pids), "the daemon outlived down"
        assert not os.path.ismount(self.mnt), f"{self.mnt} is still mounted after down"
        self.pid = None

    def check_fsck(self) -> None:
        p = self.run("fsck")
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0 and re.search(r"\b0 errors\b", out), (
            f"fsck exited {p.returncode}:\n{out}{p.stderr.decode(errors='replace')}\n"
            f"{self.log_tail()}")

    def cleanup(self) -> None:
        """Whatever is left: a mount, a daemon, the root directory."""
        if os.path.ismount(self.mnt) or not self._stat_ok():
            self.abort()
        for pid in self.pids:
            if proc_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not os.path.ismount(self.mnt) and not os.environ.get("PFSMOUNT_TEST_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)  # PFSMOUNT_TEST_KEEP=1 keeps logs

    def _stat_ok(self) -> bool:
        try:
            os.stat(self.mnt)
        except OSError:
            return False
        return True


@contextlib.contextmanager
def mounted(prefix: str = "pfsf") -> Iterator[Mount]:
    """A daemon with a mount for the length of the block; fsck + down at the end."""
    require_fuse()
    m = Mount(prefix)
    try:
        m.up()
        yield m
        if m.broken is None and m.health() is None:
            m.check_fsck()
            m.down()
    finally:
        m.cleanup()


@pytest.fixture(scope="module")
def mount() -> Iterator[Mount]:
    with mounted() as m:
        yield m


@pytest.fixture(autouse=True)
def _mount_stays_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that uses ``mount``: the daemon is alive and the mount answers. A
    watchdog ends a hung test by tearing the mount down."""
    if "mount" not in request.fixturenames:
        yield
        return
    m: Mount = request.getfixturevalue("mount")
    if m.broken is not None:
        pytest.fail(f"the module's mount died in an earlier test: {m.broken}")
    watchdog = threading.Timer(deadline(request.node), m.abort)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
    problem = m.health()
    if problem is not None:
        m.broken = problem
        pytest.fail("after the test: " + problem)


def deadline(item: pytest.Item) -> float:
    """The watchdog's limit for one test: ``@pytest.mark.mount_deadline(seconds)`` raises it
    (e.g. for Hypothesis, whose shrinking of a failure may take minutes)."""
    marker = item.get_closest_marker("mount_deadline")
    return max(TEST_DEADLINE, float(marker.args[0])) if marker else TEST_DEADLINE


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mount_deadline(seconds): the mount watchdog's limit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A hung FUSE request does not return to Python, so signal-based timeouts would not
    fire: mount tests time out by thread (the watchdog above normally acts first)."""
    for item in items:
        if _FUSE_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(deadline(item) + 130, method="thread"))
