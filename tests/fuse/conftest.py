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
``CI=true``, where they fail: CI must have a real mount. How a daemon is started, checked
and cleaned up is shared with the other suites (``Mounted`` in tests/conftest.py).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pfsmount.api.client import Client
from pfsmount.pfs.model import Commit
from tests.conftest import Mounted, alive, require_fuse, running

# Seconds one test may take before the watchdog tears the mount down (the long differential
# run, PFSMOUNT_LONG_DIFF=1, is allowed an hour).
LONG = os.environ.get("PFSMOUNT_LONG_DIFF") == "1"
TEST_DEADLINE = 3600.0 if LONG else 150.0
_FUSE_DIR = Path(__file__).resolve().parent


class Mount(Mounted):
    """One daemon with its mount, and the ``pfsmount`` command pointed at its root."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._names = itertools.count(1)
        self.broken: str | None = None  # why the mount is known dead, for later tests

    # -- the command --------------------------------------------------------------------------

    def run(self, *args: str | os.PathLike[str], input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return self.call(*args, input=input, timeout=timeout)

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

    # -- lifetime -----------------------------------------------------------------------------

    def up(self) -> int:
        pid = super().up()
        self.broken = None
        assert self.wait_mounted(), f"{self.mnt} is not a mount point after up\n{self.log_tail()}"
        return pid

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
        if self.pid is None or not alive(self.pid):
            return f"the daemon (pid {self.pid}) is gone\n{self.log_tail()}"
        if not self.is_mounted():
            return f"{self.mnt} is no longer a mount point\n{self.log_tail()}"
        if not os.path.ismount(self.mnt):
            return f"os.path.ismount({self.mnt}) is False\n{self.log_tail()}"
        return None

    def abort(self) -> None:
        """Detach the mount and kill the daemon: ends any request hanging on it."""
        self.unmount()
        self.kill_pids()

    def teardown(self) -> None:
        """fsck + down, unless the mount is already known dead (cleanup then deals with it)."""
        if self.broken is None and self.health() is None:
            super().teardown()


@pytest.fixture(scope="module")
def mount() -> Iterator[Mount]:
    """A daemon with a mount for the whole module; fsck + down at the end."""
    require_fuse("CI must run the mount tests", "pyfuse3")
    with running(Mount("pfsf")) as m:
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


def errno_of(fn: Callable[..., object], *args: object) -> int:
    """The errno of the ``OSError`` that ``fn(*args)`` must raise."""
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno is not None
    return info.value.errno
