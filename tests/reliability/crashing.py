"""Killing a real daemon with SIGKILL and starting it again, cheaply and many times.

The crash tests (tests/e2e/test_crash.py, tests/reliability/test_kills.py) share this:

- ``Crashable``: a daemon on a root of its own under /tmp that a test kills and restarts
  hundreds of times. ``restart`` spawns ``pfsmount up --foreground`` itself (what ``pfsmount
  up`` spawns, without the extra CLI process: the daemon's own start is the cost that
  matters), ``up`` goes through the real ``pfsmount up``; both wait until the daemon serves
  (and, with a mount, until it is mounted). ``crash`` SIGKILLs it.
- ``kill9``: SIGKILL a pid and wait until it and every process it started are gone (reader
  processes, sandboxes: nothing may outlive a crashed daemon).
- ``wait_connected`` and ``Talk``: a CLI command in flight while the daemon dies.
- ``Tree`` and ``listing``: what a commit must hold, as the test knows it, and what the
  daemon says it holds (paths with BLAKE3 hashes).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import blake3

from pfsmount import Client
from pfsmount.errors import DaemonNotRunning
from tests.conftest import Commands, alive, env, short_root

Tree = dict[str, bytes]  # path ("/a/b") -> content
START_TIMEOUT = 60.0


def wait_connected(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """Until ``proc`` holds a socket (its connection to the daemon) or exits."""
    deadline = time.monotonic() + timeout
    fd_dir = Path(f"/proc/{proc.pid}/fd")
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            for fd in fd_dir.iterdir():
                try:
                    if os.readlink(fd).startswith("socket:"):
                        return True
                except OSError:
                    pass
        except OSError:
            pass
        time.sleep(0.002)
    return False


def _processes() -> Iterator[tuple[int, int, int]]:
    """(pid, parent pid, session id) of every process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        yield int(stat.parent.name), int(fields[1]), int(fields[3])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (its reader processes, their fork server...)."""
    children: dict[int, list[int]] = {}
    for child, parent, _ in _processes():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill9(pid: int, proc: subprocess.Popen[bytes] | None = None,
          known: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """SIGKILL the daemon at once; then every process it started must go away with it:
    those in its session (it leads one, as ``pfsmount up`` starts it) and the ``known``
    ones (``descendants`` from before, for any that left the session). ``proc``: the
    daemon's Popen when this process is its parent (it is reaped then)."""
    os.kill(pid, signal.SIGKILL)
    below = set(known) | {p for p, _, session in _processes() if session == pid and p != pid}
    if proc is not None:
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, f"daemon {pid} survived SIGKILL"
        time.sleep(0.005)
    while left := {p for p in below if alive(p)}:
        assert time.monotonic() < deadline, f"processes {left} outlived the daemon {pid}"
        time.sleep(0.01)


class Talk(threading.Thread):
    """``communicate`` in a thread: feeds stdin and collects output while the test kills."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: bytes | None) -> None:
        super().__init__(daemon=True)
        self.proc, self.stdin = proc, stdin
        self.out = self.err = b""
        self.start()

    def run(self) -> None:
        self.out, self.err = self.proc.communicate(self.stdin, timeout=120)

    def result(self) -> tuple[bytes, bytes]:
        self.join(timeout=130)
        assert not self.is_alive(), "the interrupted command did not exit"
        return self.out, self.err


def listing(client: Client, ref: str) -> dict[str, str]:
    """What the daemon says ``ref`` holds: file path -> BLAKE3 hex of its content."""
    return {f.path: f.hash for f in client.walk_files(ref) if f.type == "file"}


def hashes(tree: Tree) -> dict[str, str]:
    """What ``listing`` must answer for a commit that holds ``tree``."""
    return {path: blake3.blake3(data).hexdigest() for path, data in tree.items()}


class Crashable(Commands):
    """A daemon that is SIGKILLed and started again; ``mnt`` is where it mounts, if it does.
    ``pid``: the daemon serving now (None after a crash)."""

    def __init__(self, prefix: str = "pfk") -> None:
        super().__init__(short_root(prefix))
        self.mnt = self.root / "mnt"
        self.mnt.mkdir()
        self.pid: int | None = None
        self.mounted = False
        self._proc: subprocess.Popen[bytes] | None = None

    def flags(self, mount: bool) -> list[str | os.PathLike[str]]:
        return ["--mount", self.mnt] if mount else ["--no-mount"]

    def up(self, mount: bool = False) -> int:  # type: ignore[override]
        """``pfsmount up`` as a user runs it."""
        self.pid = self.start(*self.flags(mount))[0]
        self.mounted, self._proc = mount, None
        if mount:
            self._wait_mounted()
        return self.pid

    def restart(self, mount: bool = False) -> int:
        """Start the daemon the way ``pfsmount up`` does (``up --foreground`` detached, its
        output in the root's log), and wait until it serves."""
        assert self.pid is None, "the daemon is still running"
        with open(self.root / "daemon.log", "ab") as log:
            proc = subprocess.Popen(self.argv("up", "--foreground", *self.flags(mount)),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env(), start_new_session=True)
        client = Client(self.root)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = proc.poll()
            assert code is None, f"the daemon did not start (exit {code})\n{self.log_tail()}"
            try:
                client.status()
                break
            except DaemonNotRunning:
                assert time.monotonic() < deadline, f"no answer in {START_TIMEOUT} s"
                time.sleep(0.005)
        client.close()
        self.pid, self.mounted, self._proc = proc.pid, mount, proc
        self.pids.add(proc.pid)
        if mount:
            self._wait_mounted()
        return proc.pid

    def _wait_mounted(self) -> None:
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mnt):
            assert time.monotonic() < deadline, f"{self.mnt} is not mounted\n{self.log_tail()}"
            time.sleep(0.01)

    def crash(self, known: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        """SIGKILL the daemon (its mount, if any, is left dead, as after a real crash);
        ``known``: processes it had started, as ``kill9`` takes them."""
        assert self.pid is not None
        kill9(self.pid, self._proc, known)
        self.pid, self._proc = None, None

    def client(self, timeout: float = 60) -> Client:
        return Client(self.root, timeout=timeout)

    def check_log(self) -> None:
        """No traceback in the daemon's log, but those of multiprocessing's own processes
        (the readers' fork server and the readers it was starting) finding their pipe to a
        killed daemon closed: an ``EOFError`` raised inside multiprocessing alone."""
        for block in re.split(r"(?=^Traceback )", self.log_text(), flags=re.M)[1:]:
            lines = block.splitlines()
            end = next((i for i, line in enumerate(lines) if not line.startswith((" ", "T"))),
                       len(lines) - 1)
            frames = [line for line in lines[:end] if line.startswith('  File "')]
            assert lines[end].startswith("EOFError") and all(
                '"<string>"' in f or "/multiprocessing/" in f for f in frames), (
                "the daemon logged a traceback:\n" + "\n".join(lines[:end + 1]))

    def down(self) -> None:
        super().down()
        assert not os.path.ismount(self.mnt), f"{self.mnt} is still mounted after down"
        self.check_log()
        self.pid = None

    def cleanup(self) -> None:
        """Whatever is left: a daemon, a (dead) mount, the root (PFSMOUNT_TEST_KEEP=1 keeps
        it, with its log)."""
        self.kill_pids()
        self.kill_leftovers()
        if os.path.ismount(self.mnt) or not os.path.exists(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True,
                           timeout=30, check=False)
        if not os.environ.get("PFSMOUNT_TEST_KEEP"):
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False,
                           capture_output=True, timeout=60)
