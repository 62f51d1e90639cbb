"""Runners: run one datum's command with its inputs read-only at ``/pfs/<input>/`` and an
empty writable ``/pfs/out``, in a bubblewrap sandbox over the host's programs (here) or in a
Docker container (``scheduler.containers``). Both are blocking calls made from worker
threads; both keep the datum's combined stdout and stderr in its log file and return the exit
code. Here: the task both take, what both share, and the sandbox. Nothing here knows about
jobs, commits or the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pfsmount.errors import PfsError


class RunnerError(PfsError, code="runner_error", exit_code=11):
    """The runner itself cannot run (no Docker engine, a missing image): no retry helps."""


@dataclass
class Task:
    """One attempt at one datum."""

    cmd: list[str]
    stdin: str
    env: dict[str, str]
    binds: list[tuple[Path, str]]  # host path -> path inside, read-only
    out: Path  # host directory bound at /pfs/out
    log: Path
    working_dir: str = ""
    timeout: float | None = None
    image: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    pool: str = ""  # Docker: may run in a long-lived container of this pool (a job's id)


class Runner(Protocol):
    def run(self, task: Task) -> int: ...


def stdin_file(task: Task) -> Path:
    """The datum's stdin as a file beside its /pfs/out: a pipe would fail (EPIPE) or block
    when the command never reads it."""
    path = task.out.parent / "stdin"
    path.write_text(task.stdin)
    return path


def _wait(proc: subprocess.Popen[bytes], task: Task) -> int:
    deadline = None if task.timeout is None else time.monotonic() + task.timeout
    while True:
        try:
            return proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            timed_out = deadline is not None and time.monotonic() > deadline
            if task.cancelled.is_set() or timed_out:
                proc.kill()
                proc.wait()
                return log_killed(task)


def log_killed(task: Task) -> int:
    """Say in the datum's log why it was killed (the job's error reads it), in both runners."""
    with open(task.log, "a") as log:
        log.write("\n[pfsmount] job stopped\n" if task.cancelled.is_set()
                  else "\n[pfsmount] datum timed out\n")
    return -9


def empty_dir(directory: Path, last: str = "") -> None:
    """Remove what ``directory`` holds (never following a link), even what a command made
    read-only or unreadable to its owner (``cp -r`` of a read-only input makes 0555
    directories, which a daemon not running as root cannot empty as they are); the entry
    named ``last`` goes last (a spout waits on its marker)."""
    for entry in sorted(os.scandir(directory), key=lambda e: e.name == last):
        try:
            _remove(entry.path)
        except PermissionError:  # made read-only: writable again, then once more
            os.chmod(directory, 0o700)
            _writable(entry.path)
            _remove(entry.path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _writable(top: str) -> None:
    """Every directory below ``top`` (and it) writable and searchable by its owner, no link
    followed."""
    if not os.path.isdir(top) or os.path.islink(top):
        return
    os.chmod(top, 0o700)
    for root, dirs, _ in os.walk(top):  # top-down: a directory is opened once made readable
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)


NOBODY = 65534  # the uid and gid a datum runs as
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a datum sees of the host's /etc: enough for programs, their libraries, R and Python
# to start; no secrets (shadow, ssh keys, credentials) and no host configuration beyond it.
ETC = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group",
       "nsswitch.conf", "host.conf", "localtime", "timezone", "locale.alias", "locale.conf",
       "default/locale", "mime.types", "magic", "magic.mime", "R", "python3*", "perl",
       "ssl/openssl.cnf", "fonts", "terminfo",
       "debian_version", "os-release", "environment", "profile", "bash.bashrc", "inputrc",
       "protocols", "services")
TOP = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")  # host programs, read-only


def _host(names: tuple[str, ...], base: str) -> list[str]:
    """bwrap arguments that show ``base/name`` (a glob) as on the host, read-only: symlinks
    as symlinks (``/bin -> usr/bin``), the rest bound; what the host lacks is left out."""
    argv: list[str] = []
    for path in (p for name in names for p in sorted(Path(base).glob(name))):
        if path.is_symlink():
            argv += ["--symlink", str(path.readlink()), str(path)]
        elif path.exists():
            argv += ["--ro-bind", str(path), str(path)]
    return argv


def sandboxed(pid: int) -> int | None:
    """The process bwrap ``pid`` runs (the first below it that is not bwrap itself: with a
    pid namespace, bwrap runs under a bwrap of its own), or None once it has ended."""
    todo = [pid]
    while todo:
        p = todo.pop(0)
        with contextlib.suppress(OSError):
            if p != pid and Path(f"/proc/{p}/comm").read_text().strip() != "bwrap":
                return p
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(k) for k in (task / "children").read_text().split()]
    return None


class SandboxRunner:
    """bubblewrap: a root built from nothing (a tmpfs) holding the host's programs and
    libraries read-only, a minimal /etc, the datum's inputs read-only under /pfs, /pfs/out
    writable and a private /tmp; nothing else of the host (no /pfs, /home, /root, /run, /var,
    no daemon root or socket). The datum runs as uid 65534 in a user namespace of its own with
    no capabilities, no new privileges, no network, in a session and process tree of its own.
    That uid maps to the daemon's own outside, so what it writes to /pfs/out stays the
    daemon's to read and remove; and it works alike for root and for an ordinary user."""

    def __init__(self, hidden: tuple[Path, ...] = ()) -> None:
        """``hidden``: the daemon's own places (its root, the mount), covered with an empty
        tmpfs should they lie under a directory the datum sees (a root in /usr/local)."""
        self.bwrap = shutil.which("bwrap")
        top, etc = _host(TOP, "/"), _host(ETC, "/etc")
        self.base = [*top, "--dir", "/etc", *etc]
        shown = [Path(a) for a in top[2::3] + etc[2::3]]  # where each one shows inside
        for path in hidden:
            path = path.resolve()
            if any(path == s or s in path.parents for s in shown):
                self.base += ["--tmpfs", str(path)]

    def argv(self, task: Task, network: bool = False,
             writable: tuple[tuple[Path, str], ...] = ()) -> list[str]:
        """The bwrap command line of ``task``. ``network`` keeps the host's network (and
        leaves the session to the caller: ``pfsmount notebook`` serves on its loopback);
        ``writable``: more host paths bound read-write (a notebook's own directory)."""
        if self.bwrap is None:
            raise RunnerError("bubblewrap (bwrap) is not installed; install it or give the "
                              "pipeline an image to run in Docker")
        unshare = ["--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
                   "--unshare-cgroup-try"] if network else ["--new-session", "--unshare-all",
                                                            "--unshare-user"]
        argv = [self.bwrap, "--die-with-parent", *unshare,
                "--uid", str(NOBODY), "--gid", str(NOBODY),
                "--cap-drop", "ALL", "--hostname", "datum", "--tmpfs", "/", *self.base,
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--dir", "/pfs",
                "--bind", str(task.out), "/pfs/out"]
        for host, inside in task.binds:
            argv += ["--ro-bind", str(host), inside]
        for host, inside in writable:
            argv += ["--bind", str(host), inside]
        argv += ["--remount-ro", "/"]  # only /pfs/out and /tmp are writable
        argv += ["--clearenv", "--setenv", "PATH", PATH, "--setenv", "HOME", "/tmp",
                 "--setenv", "TMPDIR", "/tmp"]
        for key in ("LANG", "LC_ALL", "TZ"):  # the host's locale, nothing else of its env
            if key in os.environ:
                argv += ["--setenv", key, os.environ[key]]
        for key, value in task.env.items():
            argv += ["--setenv", key, value]
        return [*argv, "--chdir", task.working_dir or "/", "--", *task.cmd]

    def run(self, task: Task) -> int:
        argv = self.argv(task)
        with open(task.log, "ab") as log, open(stdin_file(task), "rb") as stdin:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=log,
                                    stderr=subprocess.STDOUT)
            return _wait(proc, task)
