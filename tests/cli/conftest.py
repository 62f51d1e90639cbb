"""Fixtures that run the real ``pfsmount`` command against a real daemon, in subprocesses.

Each daemon serves its own short root under /tmp (a Unix socket path must stay under 108
bytes, and pytest's ``tmp_path`` can be longer). A daemon fixture starts it with
``pfsmount --root R up`` and, at teardown, runs ``pfsmount --root R fsck`` (which must exit 0
and report ``0 errors``), then ``pfsmount --root R down`` (after which the daemon must be gone
and its log free of tracebacks), then SIGKILLs any process still running with ``--root R``.
Nothing is mocked; a missing ``pfsmount`` command fails the test.

``tests/api`` and ``tests/e2e`` load this file by path and re-export its fixtures, so the
three directories share one way of starting and checking daemons.
"""

from __future__ import annotations

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pfsmount import Client

PFSMOUNT = Path(sys.executable).with_name("pfsmount")
PROJECT = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT / "examples" / "fruit_stand"
RUN_TIMEOUT = 120.0


class Result(NamedTuple):
    """What a user sees from one command: exit code, stdout and stderr (as text)."""

    code: int
    out: str
    err: str


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PFSMOUNT_ROOT", None)  # every command names its root explicitly
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


class Pfsmount:
    """``pfsmount --root ROOT ...`` as a user runs it, plus checks of what the user sees."""

    def __init__(self, root: Path) -> None:
        if not PFSMOUNT.exists():
            pytest.fail(f"{PFSMOUNT} is missing: run `.venv/bin/pip install -e .` first")
        self.root = root
        self.pids: set[int] = set()  # every daemon pid seen, killed at teardown if left

    # -- running commands ------------------------------------------------------------------

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return [str(PFSMOUNT), "--root", str(self.root), *map(str, args)]

    def run_raw(self, *args: str | os.PathLike[str], input: bytes | None = None,
                timeout: float = RUN_TIMEOUT, cwd: Path | None = None
                ) -> tuple[int, bytes, str]:
        """Run a command; stdout as bytes (for file contents), stderr as text."""
        p = subprocess.run(self.argv(*args), input=input, capture_output=True,
                           timeout=timeout, env=_env(), cwd=cwd or PROJECT,
                           stdin=None if input is not None else subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr.decode(errors="replace")

    def run(self, *args: str | os.PathLike[str], input: bytes | str | None = None,
            timeout: float = RUN_TIMEOUT, cwd: Path | None = None) -> Result:
        data = input.encode() if isinstance(input, str) else input
        code, out, err = self.run_raw(*args, input=data, timeout=timeout, cwd=cwd)
        return Result(code, out.decode(errors="replace"), err)

    def popen(self, *args: str | os.PathLike[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                                cwd=PROJECT)

    def ok(self, *args: str | os.PathLike[str], input: bytes | str | None = None,
           timeout: float = RUN_TIMEOUT) -> str:
        """Run a command that must succeed silently on stderr; returns stdout."""
        r = self.run(*args, input=input, timeout=timeout)
        assert r.code == 0, f"pfsmount {' '.join(map(str, args))} exited {r.code}: {r.err}"
        assert "Traceback" not in r.err, r.err
        return r.out

    def json(self, *args: str | os.PathLike[str]) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def get(self, *args: str | os.PathLike[str]) -> bytes:
        """A command's stdout as bytes (``file get``, ``get-file``); it must succeed."""
        code, out, err = self.run_raw(*args)
        assert code == 0, f"pfsmount {' '.join(map(str, args))} exited {code}: {err}"
        assert not err, err
        return out

    def fails(self, *args: str | os.PathLike[str], code: int | None = None,
              input: bytes | str | None = None, match: str | None = None) -> Result:
        """Run a command that must fail the way DESIGN says: non-zero exit, one line on
        stderr, no traceback. ``code`` pins the exit code, ``match`` a regex on the line."""
        r = self.run(*args, input=input)
        assert_one_line_error(r, f"pfsmount {' '.join(map(str, args))}")
        if code is not None:
            assert r.code == code, f"exit {r.code}, expected {code}: {r.err}"
        if match is not None:
            assert re.search(match, r.err), f"{r.err!r} does not match {match!r}"
        return r

    # -- the daemon -------------------------------------------------------------------------

    def up(self) -> int:
        """``pfsmount up --no-mount``: these tests drive the CLI and API, not the mount (a
        FUSE mount per test daemon would also collide on the default mountpoint)."""
        r = self.run("up", "--no-mount", timeout=90)
        assert r.code == 0, f"pfsmount up exited {r.code}: {r.err}\n{self.log_tail()}"
        m = re.search(r"\(pid (\d+)\)", r.out)
        assert m, f"pfsmount up printed {r.out!r}"
        pid = int(m.group(1))
        self.pids.add(pid)
        return pid

    def pid(self) -> int:
        pid = int(self.json("status")["pid"])
        self.pids.add(pid)
        return pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.root / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no daemon.log)"
        return "daemon.log:\n" + "\n".join(text.splitlines()[-lines:])

    def check_fsck(self) -> None:
        r = self.run("fsck")
        assert r.code == 0 and re.search(r"\b0 errors\b", r.out), (
            f"fsck exited {r.code}:\n{r.out}{r.err}\n{self.log_tail()}"
        )

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


def assert_one_line_error(r: Result, what: str = "the command") -> None:
    assert r.code != 0, f"{what} succeeded but should have failed: {r.out}"
    lines = r.err.splitlines()
    assert "Traceback" not in r.err, f"{what} printed a traceback:\n{r.err}"
    assert len(lines) == 1, f"{what} printed {len(lines)} lines on stderr:\n{r.err}"
    assert lines[0].startswith("error: "), lines[0]


def short_root(prefix: str = "pfs") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextmanager
def serving(prefix: str = "pfs") -> Iterator[Pfsmount]:
    """A daemon on a fresh root: ``up`` before, ``fsck`` + ``down`` + cleanup after."""
    cli = Pfsmount(short_root(prefix))
    try:
        cli.up()
        yield cli
        cli.check_fsck()
        r = cli.run("down", timeout=60)
        assert r.code == 0, f"pfsmount down exited {r.code}: {r.err}"
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in cli.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in cli.pids), "the daemon outlived `pfsmount down`"
        assert not (cli.root / "pfsmount.sock").exists(), "down left the socket behind"
        log = (cli.root / "daemon.log").read_text(errors="replace")
        assert "Traceback" not in log, f"the daemon logged a traceback:\n{log[-4000:]}"
    finally:
        cli.kill_leftovers()
        shutil.rmtree(cli.root, ignore_errors=True)


@pytest.fixture(scope="module")
def pfsd() -> Iterator[Pfsmount]:
    """One daemon for a whole test module; tests keep to repos of their own."""
    with serving() as cli:
        yield cli


@pytest.fixture
def fresh_pfsd() -> Iterator[Pfsmount]:
    """A daemon of the test's own, for tests that look at global state."""
    with serving() as cli:
        yield cli


@pytest.fixture
def no_daemon() -> Iterator[Pfsmount]:
    """A root no daemon serves."""
    cli = Pfsmount(short_root())
    try:
        yield cli
    finally:
        cli.kill_leftovers()
        shutil.rmtree(cli.root, ignore_errors=True)


@pytest.fixture(scope="module")
def client(pfsd: Pfsmount) -> Iterator[Client]:
    """The Python client on the module's daemon, for fast setup and cross-checks."""
    with Client(pfsd.root, timeout=120) as c:
        yield c


@pytest.fixture
def repo(request: pytest.FixtureRequest, client: Client) -> str:
    """A new, empty repo in the module's daemon, named after the test (made through the
    client: setup need not pay for a command)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:100]
    client.create_repo(name)
    return name


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
