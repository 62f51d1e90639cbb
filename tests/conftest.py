"""Shared fixtures, and the one way the tests start, drive and check real daemons.

``pfs`` is a real store (LMDB + pack files) under ``tmp_path``; every test that uses it ends
with a full ``fsck``.

A daemon serves its own short root under /tmp (a Unix socket path must stay under 108 bytes,
and pytest's ``tmp_path`` can be longer) and is driven through the real ``pfsmount --root R``
command in subprocesses; nothing is mocked, and a missing ``pfsmount`` command fails the
test. ``running(daemon)`` runs ``up`` before a block and, after it, ``pfsmount fsck`` (exit 0,
``0 errors``) and ``pfsmount down`` (exit 0, every daemon pid gone); whatever is left is then
killed and removed, also when the test failed. The kinds of daemon:

- ``Pfsmount`` (``up --no-mount``), for the CLI and the API: the fixtures ``pfsd``,
  ``fresh_pfsd``, ``no_daemon``, ``client``, ``web`` and ``examples`` below serve tests/cli,
  tests/api and tests/e2e. ``down`` must also remove the socket, and the log must hold no
  traceback; at teardown every process still running with ``--root R`` is SIGKILLed.
- ``Mounted`` (``up --mount R/mnt``): the base of tests/fuse's ``Mount`` and
  tests/scheduler's ``Pfsd`` (whose ``pfsd`` fixture overrides the one here). ``down`` must
  also unmount; at teardown a mount left behind is detached with ``fusermount3 -u -z`` and
  the daemon killed.

``s3_server`` (from tests/s3.py) is a real SeaweedFS S3 server for the session, for the S3
backend's tests and egress to S3; its start-up time is in the run's summary.

Parts the tests cannot do without (FUSE, bubblewrap, Docker, SeaweedFS) skip them on a
developer's machine and fail them under ``CI=true`` (``unusable``).

Conftests below import from this file as ``tests.conftest``: the name pytest gives it under
``--import-mode=importlib``, and it is always loaded before them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeVar

import pytest

from pfsmount import Client
from pfsmount.pfs import Pfs
from pfsmount.pfs.fsck import fsck
from tests import confine
from tests.s3 import report_startup
from tests.s3 import s3_server as s3_server  # the fixture, for every suite

PFSMOUNT = Path(sys.executable).with_name("pfsmount")
PROJECT = Path(__file__).resolve().parents[1]
EXAMPLES = PROJECT / "examples" / "fruit_stand"
RUN_TIMEOUT = 120.0


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report_startup(terminalreporter)


# -- pfs: a real store (LMDB + pack files) under tmp_path, checked by fsck at teardown -------


@pytest.fixture
def pfs(tmp_path: Path) -> Iterator[Pfs]:
    store = Pfs(tmp_path / "root")
    try:
        yield store
        report = fsck(store, verify_data=True)
        if not report.ok:
            pytest.fail("fsck after the test found:\n" + "\n".join(report.errors))
    finally:
        store.close()


# -- what a daemon needs ------------------------------------------------------------------------


def unusable(what: str, ci_note: str) -> NoReturn:
    """A part the tests need is missing: skip on a developer's machine, fail under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} ({ci_note})")
    pytest.skip(what)


def require_pfsmount() -> None:
    if not PFSMOUNT.exists():
        pytest.fail(f"{PFSMOUNT} is missing: run `.venv/bin/pip install -e .` first")


def require_fuse(ci_note: str, *modules: str) -> None:
    """/dev/fuse, fusermount3 and the Python ``modules`` named, or ``unusable``."""
    require_pfsmount()
    missing = [p for p in ("/dev/fuse",) if not Path(p).exists()]
    missing += [t for t in ("fusermount3",) if shutil.which(t) is None]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        unusable("FUSE is not usable here: missing " + ", ".join(missing), ci_note)


def env() -> dict[str, str]:
    """The environment of every command: no PFSMOUNT_ROOT (each names its root explicitly)."""
    env = dict(os.environ)
    env.pop("PFSMOUNT_ROOT", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


# -- daemons ------------------------------------------------------------------------------------


class Result(NamedTuple):
    """What a user sees from one command: exit code, stdout and stderr (as text)."""

    code: int
    out: str
    err: str


def error_line(r: Result, what: str = "the command", code: int | None = None,
               match: str | None = None) -> str:
    """``r`` failed the way DESIGN says (non-zero exit, one ``error:`` line on stderr, no
    traceback); ``code`` pins the exit code, ``match`` is a regex on the line. The line."""
    assert r.code != 0, f"{what} succeeded but should have failed: {r.out}"
    assert "Traceback" not in r.err, f"{what} printed a traceback:\n{r.err}"
    lines = r.err.splitlines()
    assert len(lines) == 1, f"{what} printed {len(lines)} lines on stderr:\n{r.err}"
    assert lines[0].startswith("error: "), lines[0]
    if code is not None:
        assert r.code == code, f"exit {r.code}, expected {code}: {r.err}"
    if match is not None:
        assert re.search(match, lines[0]), f"{lines[0]!r} does not match {match!r}"
    return lines[0]


def short_root(prefix: str, parent: str = "/tmp") -> Path:
    """A new directory under /tmp (or ``parent``), for a daemon's root."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


class Daemon:
    """A root of its own under /tmp and the ``pfsmount --root ROOT`` command pointed at it.
    ``pids`` holds every daemon pid seen: ``down`` waits for all of them, teardown kills them."""

    def __init__(self, root: Path) -> None:
        require_pfsmount()
        self.root = root
        self.pids: set[int] = set()

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return [str(PFSMOUNT), "--root", str(self.root), *map(str, args)]

    def call(self, *args: str | os.PathLike[str], input: bytes | None = None,
             timeout: float = RUN_TIMEOUT, cwd: Path | None = None
             ) -> subprocess.CompletedProcess[bytes]:
        """Run a command to its end; stdin is empty unless ``input`` is given."""
        return subprocess.run(self.argv(*args), input=input, capture_output=True,
                              timeout=timeout, env=env(), cwd=cwd or PROJECT,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def log_text(self) -> str:
        try:
            return (self.root / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        if not (self.root / "daemon.log").exists():
            return "(no daemon.log)"
        return "daemon.log:\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def check_log(self) -> None:
        log = self.log_text()
        assert "Traceback" not in log, f"the daemon logged a traceback:\n{log[-4000:]}"

    # -- lifetime -------------------------------------------------------------------------------

    def start(self, *flags: str | os.PathLike[str]) -> tuple[int, str]:
        """``pfsmount up FLAGS``: the daemon's pid (from ``(pid N)``) and what ``up`` printed."""
        p = self.call("up", *flags, timeout=90)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, (
            f"pfsmount up exited {p.returncode}: {p.stderr.decode(errors='replace')}\n"
            f"{self.log_tail()}")
        m = re.search(r"\(pid (\d+)\)", out)
        assert m, f"pfsmount up printed {out!r}"
        pid = int(m.group(1))
        self.pids.add(pid)
        return pid, out

    def up(self) -> int:
        raise NotImplementedError

    def check_fsck(self) -> None:
        p = self.call("fsck")
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0 and re.search(r"\b0 errors\b", out), (
            f"fsck exited {p.returncode}:\n{out}{p.stderr.decode(errors='replace')}\n"
            f"{self.log_tail()}")

    def down(self) -> None:
        """``pfsmount down``: it exits 0, and every daemon seen is gone within 15 s."""
        p = self.call("down", timeout=60)
        assert p.returncode == 0, (
            f"pfsmount down exited {p.returncode}: {p.stderr.decode(errors='replace')}")
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in self.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in self.pids), "the daemon outlived `pfsmount down`"

    def teardown(self) -> None:
        """The checks at the end of a daemon's life: fsck, then down."""
        self.check_fsck()
        self.down()

    def kill_pids(self) -> None:
        """SIGKILL every daemon seen that still runs."""
        for pid in self.pids:
            if alive(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def kill_leftovers(self) -> None:
        """SIGKILL every process still serving this root (found by ``--root ROOT`` in its
        command line, which names a directory unique to this test), with its group."""
        needle = f"--root\0{self.root}\0".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if needle not in (proc / "cmdline").read_bytes():
                    continue
                pid = int(proc.name)
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass

    def cleanup(self) -> None:
        """Whatever is left, after the test passed or failed: processes, the root."""
        self.kill_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)


D = TypeVar("D", bound=Daemon)


@contextmanager
def running(daemon: D) -> Iterator[D]:
    """``daemon`` up for the length of the block; ``teardown`` after it, ``cleanup`` always."""
    try:
        daemon.up()
        yield daemon
        daemon.teardown()
    finally:
        daemon.cleanup()


class Commands(Daemon):
    """Commands as text (``Result``), with checks of what the user sees."""

    def run(self, *args: str | os.PathLike[str], input: bytes | str | None = None,
            timeout: float = RUN_TIMEOUT, cwd: Path | None = None) -> Result:
        data = input.encode() if isinstance(input, str) else input
        p = self.call(*args, input=data, timeout=timeout, cwd=cwd)
        return Result(p.returncode, p.stdout.decode(errors="replace"),
                      p.stderr.decode(errors="replace"))

    def ok(self, *args: str | os.PathLike[str], input: bytes | str | None = None,
           timeout: float = RUN_TIMEOUT) -> str:
        """Run a command that must succeed without a traceback; returns stdout."""
        r = self.run(*args, input=input, timeout=timeout)
        assert r.code == 0, (f"pfsmount {' '.join(map(str, args))} exited {r.code}: {r.err}"
                             f"\n{self.log_tail()}")
        assert "Traceback" not in r.err, r.err
        return r.out

    def json(self, *args: str | os.PathLike[str]) -> Any:
        return json.loads(self.ok(*args, "--json"))


class Mounted(Daemon):
    """A daemon that mounts its repos at ROOT/mnt (``pid``: the one serving now)."""

    def __init__(self, prefix: str, parent: str = "/tmp") -> None:
        super().__init__(short_root(prefix, parent))
        self.mnt = self.root / "mnt"
        self.mnt.mkdir()
        self.pid: int | None = None

    def up(self) -> int:
        self.pid, out = self.start("--mount", self.mnt)
        assert "mounted at" in out, out
        return self.pid

    def down(self) -> None:
        super().down()
        assert not os.path.ismount(self.mnt), f"{self.mnt} is still mounted after down"
        self.pid = None

    def kill(self) -> None:
        """SIGKILL the daemon (a crash), leaving its mount stale; waits up to 10 s for it."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def unmount(self) -> None:
        """``fusermount3 -u -z``: detaches the mount even while requests hang on it."""
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True,
                       timeout=30, check=False)

    def cleanup(self) -> None:
        """Whatever is left: a mount (or a dead one), a daemon, the root directory (which
        PFSMOUNT_TEST_KEEP=1 keeps, with its logs)."""
        if os.path.ismount(self.mnt) or not os.path.exists(self.mnt):
            self.unmount()
        self.kill_pids()
        if not os.path.ismount(self.mnt) and not os.environ.get("PFSMOUNT_TEST_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)


# -- the CLI daemon: tests/cli, tests/api, tests/e2e ---------------------------------------------


class Pfsmount(Commands):
    """``pfsmount --root ROOT ...`` as a user runs it, against a daemon that does not mount."""

    def popen(self, *args: str | os.PathLike[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
                                cwd=PROJECT)

    def get(self, *args: str | os.PathLike[str]) -> bytes:
        """A command's stdout as bytes (``file get``, ``get-file``); it must succeed."""
        p = self.call(*args)
        err = p.stderr.decode(errors="replace")
        assert p.returncode == 0, (
            f"pfsmount {' '.join(map(str, args))} exited {p.returncode}: {err}")
        assert not err, err
        return p.stdout

    def fails(self, *args: str | os.PathLike[str], code: int | None = None,
              input: bytes | str | None = None, match: str | None = None) -> Result:
        """Run a command that must fail the way DESIGN says (``error_line``)."""
        r = self.run(*args, input=input)
        error_line(r, f"pfsmount {' '.join(map(str, args))}", code, match)
        return r

    def up(self) -> int:
        """``pfsmount up --no-mount``: these tests drive the CLI and API, not the mount (a
        FUSE mount per test daemon would also collide on the default mountpoint)."""
        return self.start("--no-mount")[0]

    def pid(self) -> int:
        pid = int(self.json("status")["pid"])
        self.pids.add(pid)
        return pid

    def down(self) -> None:
        super().down()
        assert not (self.root / "pfsmount.sock").exists(), "down left the socket behind"
        self.check_log()


@pytest.fixture(scope="module")
def pfsd() -> Iterator[Pfsmount]:
    """One daemon for a whole test module; tests keep to repos of their own."""
    with running(Pfsmount(short_root("pfs"))) as cli:
        yield cli


@pytest.fixture
def fresh_pfsd() -> Iterator[Pfsmount]:
    """A daemon of the test's own, for tests that look at global state."""
    with running(Pfsmount(short_root("pfs"))) as cli:
        yield cli


@pytest.fixture
def no_daemon() -> Iterator[Pfsmount]:
    """A root no daemon serves."""
    cli = Pfsmount(short_root("pfs"))
    try:
        yield cli
    finally:
        cli.cleanup()


@pytest.fixture(scope="module")
def client(pfsd: Pfsmount) -> Iterator[Client]:
    """The Python client on the module's daemon, for fast setup and cross-checks."""
    with Client(pfsd.root, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real ``python -m http.server`` on 127.0.0.1: (base URL, the directory it serves)."""
    served = tmp_path_factory.mktemp("www")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("python -m http.server did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", served
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


# -- another user ---------------------------------------------------------------------------


class Other:
    """Commands run as an ordinary user of this machine (not the daemon's), made by
    ``tests.confine.ordinary_user``, in a mount namespace that shows them the project."""

    def __init__(self, user: confine.User) -> None:
        self.user = user
        self.scratch = Path(tempfile.mkdtemp(prefix="pfother", dir="/tmp"))

    def run(self, *argv: str | os.PathLike[str]) -> Result:
        p = subprocess.run(confine.confined([str(a) for a in argv], self.scratch, PROJECT,
                                            self.user),
                           capture_output=True, text=True, timeout=60)
        return Result(p.returncode, p.stdout, p.stderr)

    def sh(self, command: str) -> Result:
        return self.run("sh", "-c", command)

    def each(self, *commands: str) -> list[tuple[int, str]]:
        """Several shell commands in one go (starting one costs most of a second): the exit
        code and output (stdout and stderr) of each."""
        r = self.sh("".join(f'{{ {c} ; }} 2>&1; echo "@@$?"\n' for c in commands))
        parts = re.split(r"@@(\d+)\n", r.out)
        return [(int(code), text) for text, code in zip(parts[0:-1:2], parts[1::2], strict=True)]


@pytest.fixture
def other() -> Iterator[Other]:
    o = Other(confine.ordinary_user())
    try:
        yield o
    finally:
        shutil.rmtree(o.scratch, ignore_errors=True)
