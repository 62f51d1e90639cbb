"""Runners: run one datum's command with its inputs read-only at ``/pfs/<input>/`` and an
empty writable ``/pfs/out``, in a bubblewrap sandbox over the host's programs or in a Docker
container. Both are blocking calls made from worker threads; both keep the datum's combined
stdout and stderr in its log file and return the exit code. Nothing here knows about jobs,
commits or the store.
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
from typing import Any, Protocol

from pfsmount.errors import PfsError


class RunnerError(PfsError):
    """The runner itself cannot run (no Docker engine, a missing image): no retry helps."""

    code = "runner_error"
    status = 500
    exit_code = 11


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


class Runner(Protocol):
    def run(self, task: Task) -> int: ...


def _stdin(task: Task) -> Path:
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
                return _killed(task)


def _killed(task: Task) -> int:
    """Say in the datum's log why it was killed (the job's error reads it), in both runners."""
    with open(task.log, "a") as log:
        log.write("\n[pfsmount] job stopped\n" if task.cancelled.is_set()
                  else "\n[pfsmount] datum timed out\n")
    return -9


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
        with open(task.log, "ab") as log, open(_stdin(task), "rb") as stdin:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=log,
                                    stderr=subprocess.STDOUT)
            return _wait(proc, task)


class DockerRunner:
    """A container per datum through the Docker SDK: no network, no capabilities, no new
    privileges, a read-only root, no socket or host path but the datum's own, and never
    root (the daemon's own uid, or 65534 when the daemon is root)."""

    def __init__(self) -> None:
        self._client: object | None = None
        self._lock = threading.Lock()
        self._images: set[str] = set()  # images known to be present

    def _docker(self) -> Any:
        with self._lock:
            if self._client is None:
                import docker

                try:
                    client = docker.from_env(timeout=30)
                    client.ping()
                except Exception as e:
                    raise RunnerError(
                        f"this pipeline needs Docker (transform.image) but no Docker engine "
                        f"answers: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                    ) from None
                self._client = client
            return self._client

    def _check_image(self, client: Any, image: str) -> None:
        import docker.errors

        if image in self._images:
            return
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise RunnerError(f"Docker image {image} is not present on this machine "
                              "(docker pull or docker import it)") from None
        self._images.add(image)

    @staticmethod
    def _user(task: Task) -> str:
        """The container's uid: the daemon's, so /pfs/out stays its own; as root, 65534,
        and /pfs/out is handed over (root reads and removes what it holds all the same)."""
        uid, gid = os.getuid(), os.getgid()
        if uid != 0:
            return f"{uid}:{gid}"
        os.chown(task.out, NOBODY, NOBODY)
        return f"{NOBODY}:{NOBODY}"

    def create(self, task: Task, interactive: bool = False, tty: bool = False) -> Any:
        """The container of ``task``, created, not started; ``interactive``: its stdin
        stays open for ``pfsmount datum shell`` (on a terminal with ``tty``)."""
        client = self._docker()
        self._check_image(client, task.image)
        volumes = {str(host): {"bind": inside, "mode": "ro"} for host, inside in task.binds}
        volumes[str(task.out)] = {"bind": "/pfs/out", "mode": "rw"}
        cmd = list(task.cmd)
        if task.stdin:
            volumes[str(_stdin(task))] = {"bind": "/.pfsmount-stdin", "mode": "ro"}
            cmd = ["sh", "-c", 'exec "$@" < /.pfsmount-stdin', "sh", *cmd]
        return client.containers.create(
            task.image, cmd, volumes=volumes, environment={"HOME": "/tmp", **task.env},
            network_mode="none", user=self._user(task), cap_drop=["ALL"],
            security_opt=["no-new-privileges"], read_only=True,
            tmpfs={"/pfs": "ro", "/tmp": "exec"},  # as in the sandbox: /pfs/out and /tmp
            working_dir=task.working_dir or None, tty=tty, stdin_open=interactive,
            detach=not interactive,  # else stdin stays open after the client's ends
        )

    def run(self, task: Task) -> int:
        container = self.create(task)
        exited = threading.Event()
        killed = threading.Event()

        def watch() -> None:  # stop the container on a timeout or a stopped job
            deadline = None if task.timeout is None else time.monotonic() + task.timeout
            while not exited.wait(0.1):
                if task.cancelled.is_set() or (deadline and time.monotonic() > deadline):
                    killed.set()
                    with contextlib.suppress(Exception):
                        container.kill()
                    return

        def copy_logs() -> None:  # as they come: a long-running job's log is read live
            with open(task.log, "ab") as log, contextlib.suppress(Exception):
                for chunk in container.logs(stdout=True, stderr=True, stream=True,
                                            follow=True):
                    log.write(chunk)
                    log.flush()

        try:
            container.start()
            copier = threading.Thread(target=copy_logs, daemon=True)
            copier.start()
            threading.Thread(target=watch, daemon=True).start()
            code = int(container.wait()["StatusCode"])
            exited.set()
            copier.join(30)
            return _killed(task) if killed.is_set() else code
        finally:
            exited.set()
            # Removing takes a while and nothing waits for it.
            threading.Thread(target=container.remove, kwargs={"force": True},
                             daemon=True).start()
