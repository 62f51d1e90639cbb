"""Docker datums (``transform.image``): ``DockerRunner`` runs a job's datums in long-lived
``Worker`` containers through the Engine API's exec (``Execs``), or a task in a container of
its own (``datum run|shell``, inputs that cannot be switched). Owns the containers' hardening,
their lifetime (per job, until the daemon stops, swept after a crash) and what keeps one
datum from seeing another's. Nothing here knows about jobs' records, commits or the store;
the task and what both runners share are ``scheduler.runners``'.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import platform
import shutil
import signal
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from scheduler.runners import NOBODY, RunnerError, Task, empty_dir, log_killed, stdin_file


def _idle_program() -> bytes | None:
    """A static x86-64 or arm64 program of a few bytes that waits forever (``pause``, or
    ``ppoll`` with nothing to poll), as a worker container's own process: an image need not
    hold a shell or ``sleep`` (a ``FROM scratch`` image holds only its program). None on
    another machine, where datums run one container each."""
    machine = platform.machine()
    if machine in ("x86_64", "AMD64"):
        arch, code = 0x3E, bytes.fromhex("b8220000000f05ebf7")  # mov eax,34; syscall; jmp
    elif machine in ("aarch64", "arm64"):  # x0..x3 = 0; x8 = 73 (ppoll); svc 0; b start
        arch, code = 0xB7, struct.pack("<7I", 0xD2800000, 0xD2800001, 0xD2800002,
                                       0xD2800003, 0xD2800928, 0xD4000001, 0x17FFFFFA)
    else:
        return None
    base, start = 0x400000, 64 + 56
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 2, arch, 1,
                         base + start, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, start + len(code),
                          start + len(code), 0x1000)
    return header + segment + code


IDLE = _idle_program()
CLONE_NEWIPC = 0x08000000


def _sys_admin() -> bool:
    """Whether this process holds CAP_SYS_ADMIN (bit 21), which joining a container's IPC
    namespace needs (``Worker._ipc_left``): without it a worker could not tell whether a
    datum left SysV IPC behind, so datums run in a container each."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 21 & 1)
    return False


SYS_ADMIN = _sys_admin()
LABEL = "io.pfsmount.root"  # on every container a daemon starts: the root it serves
SESSION = "io.pfsmount.session"  # and which run of that daemon started it


def _docker_user() -> str:
    """A container's uid: the daemon's, so what it writes stays the daemon's; as root,
    65534 (root reads and removes what it writes all the same)."""
    uid, gid = os.getuid(), os.getgid()
    return f"{uid}:{gid}" if uid != 0 else f"{NOBODY}:{NOBODY}"


def _ppid(pid: int) -> int:
    """The parent of process ``pid`` (host pids)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


class Execs:
    """``docker exec`` through the Engine API: create, start (the output as it comes) and
    the exit code; three requests. httpx straight on the engine's Unix socket when it has
    one, else (a TCP or SSH ``DOCKER_HOST``) the Docker SDK's calls: bench/pipelines.py
    measured the SDK ~8-11 ms (a tenth) slower per exec, as slow as ``docker exec`` itself,
    which would also cost a process per datum."""

    def __init__(self, client: Any) -> None:
        self.api = client.api
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        self.http = None
        if host.startswith("unix://"):
            import httpx

            self.http = httpx.Client(
                transport=httpx.HTTPTransport(uds=host.removeprefix("unix://")),
                base_url=f"http://docker/v{self.api.api_version}",
                timeout=httpx.Timeout(60, read=None))  # a datum's output may pause long

    def _ok(self, r: Any) -> Any:
        if r.status_code >= 400:
            try:
                message = r.json()["message"]
            except Exception:
                message = r.text
            raise RunnerError(f"the Docker engine refused to run a datum: {message}")
        return r.json() if r.headers.get("content-type") == "application/json" else None

    def create(self, container: str, cmd: list[str], env: dict[str, str], workdir: str,
               user: str) -> str:
        if self.http is None:
            return str(self.api.exec_create(container, cmd, environment=env,
                                            workdir=workdir or None, user=user)["Id"])
        return str(self._ok(self.http.post(f"/containers/{container}/exec", json={
            "Cmd": cmd, "Env": [f"{k}={v}" for k, v in env.items()], "WorkingDir": workdir,
            "User": user, "AttachStdout": True, "AttachStderr": True}))["Id"])

    def start(self, exec_id: str) -> Iterator[bytes]:
        """Start the exec; its stdout and stderr as they come, until it ends."""
        if self.http is None:
            yield from self.api.exec_start(exec_id, stream=True)
            return
        with self.http.stream("POST", f"/exec/{exec_id}/start",
                              json={"Detach": False, "Tty": False}) as r:
            if r.status_code >= 400:
                r.read()
                self._ok(r)
            buf = b""
            for chunk in r.iter_raw():  # frames: stream (1 byte), 3 zeros, size (4), data
                buf += chunk
                while len(buf) >= 8 and len(buf) >= 8 + (size := int.from_bytes(buf[4:8])):
                    yield buf[8:8 + size]
                    buf = buf[8 + size:]

    def code(self, exec_id: str) -> int | None:
        if self.http is None:
            info = self.api.exec_inspect(exec_id)
        else:
            info = self._ok(self.http.get(f"/exec/{exec_id}/json"))
        return None if info["ExitCode"] is None else int(info["ExitCode"])


class Worker:
    """One long-lived container that runs datums one after another through ``docker exec``
    (the Engine API: create, start, inspect), so a datum costs an exec, not a container.

    Hardened as a container per datum was: no network, ``cap-drop ALL``,
    ``no-new-privileges``, a read-only root, datums never root (``_docker_user``; its init
    and idle program are, without any capability, out of datums' reach), no socket and no
    host path but its own directory ``home``, whose parts are bound once:
    ``home/pfs`` at ``/pfs`` read-only, ``home/out`` at ``/pfs/out``, ``home/tmp`` at
    ``/tmp``, ``home/shm`` at ``/dev/shm`` (a private IPC namespace otherwise) and
    ``home/run`` at ``/.pfsmount`` read-only (the idle program, a datum's stdin). Docker's
    ``--init`` is its first process (it reaps), the idle program its only child.

    Switching a datum's inputs: neither a process in the container (no capability) nor the
    daemon (an ordinary user, often) can mount anything, and Docker cannot add a bind to a
    running container; a symlink would show another layout than the sandbox (``find`` and
    ``cp -r`` see the link). So the inputs the executor prepared (copies in its scratch
    space, on the same file system) are *renamed* into ``home/pfs`` before the datum and
    back after it: nothing is copied, and ``/pfs`` holds exactly that datum's inputs,
    read-only through the bind. Inputs that cannot be renamed (the mount's own paths) run
    in a container of their own (``DockerRunner.run``).

    Between datums nothing carries over: every process of the container's pid namespace but
    the two recorded by host pid when it started (docker-init, the idle program) is killed
    (``kill``: what the datum left running in the background too, whatever it calls
    itself), what it wrote to ``/pfs/out`` is moved to the task's own ``out``, and
    ``/pfs/out``, ``/tmp`` and ``/dev/shm`` are emptied (their modes reset), so the next
    datum starts from an empty, private ``/pfs/out``. What cannot be checked or undone
    retires the container (a fresh one runs the next datum): SysV IPC objects a datum left
    (``_ipc_left``; a daemon without CAP_SYS_ADMIN cannot look, so it runs no workers:
    ``DockerRunner.movable``), an output that cannot be moved, processes that cannot be
    seen or killed."""

    def __init__(self, client: Any, execs: Execs, image: str, home: Path,
                 labels: dict[str, str]) -> None:
        self.client, self.execs, self.image, self.home = client, execs, image, home
        self.pfs, self.out, self.tmp, self.shm, self.run_dir = (
            home / n for n in ("pfs", "out", "tmp", "shm", "run"))
        self.user = _docker_user()
        # init and the idle program run as another uid than datums (root, without any
        # capability, when the daemon is): else a datum could signal or ptrace them, take
        # the idle program over and outlive itself, or end the container under the next
        # datum
        self.own_user = "0:0" if os.getuid() == 0 else self.user
        self.broken = False  # set when it cannot be trusted with another datum
        self.init: int | None = None  # docker-init's and the idle program's host pids
        self.keep: frozenset[int] = frozenset()
        self.pidns: str | None = None
        home.mkdir(parents=True)
        try:
            for d in (self.pfs, self.out, self.tmp, self.shm, self.run_dir,
                      self.pfs / "out"):
                d.mkdir()
                d.chmod(0o755)
            if os.getuid() == 0:
                os.chown(self.out, NOBODY, NOBODY)
            idle = self.run_dir / "idle"
            assert IDLE is not None
            idle.write_bytes(IDLE)
            idle.chmod(0o755)
            self._reset()
            volumes = {str(self.pfs): {"bind": "/pfs", "mode": "ro"},
                       str(self.out): {"bind": "/pfs/out", "mode": "rw"},
                       str(self.tmp): {"bind": "/tmp", "mode": "rw"},
                       str(self.shm): {"bind": "/dev/shm", "mode": "rw"},
                       str(self.run_dir): {"bind": "/.pfsmount", "mode": "ro"}}
            self.container = client.containers.create(
                image, [], entrypoint=["/.pfsmount/idle"], init=True, volumes=volumes,
                environment={"HOME": "/tmp"}, network_mode="none", ipc_mode="none",
                user=self.own_user, cap_drop=["ALL"], security_opt=["no-new-privileges"],
                read_only=True, labels=labels, detach=True)
            self.container.start()
            self.container.reload()
            self._own(int(self.container.attrs["State"]["Pid"]))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove the container (killing what runs in it) and its directory."""
        with contextlib.suppress(Exception):
            self.container.remove(force=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def _own(self, init: int) -> None:
        """Record the container's own processes by host pid, before any datum runs: its
        init (docker-init) and that one's only child, the idle program. Every other process
        of its pid namespace is a datum's (``kill``): never told apart by command line, which
        a datum chooses (``execv`` under argv[0] ``/.pfsmount/idle``). Where the engine's
        processes are not visible here (another pid namespace), ``pidns`` stays None."""
        with contextlib.suppress(OSError):
            if not Path(f"/proc/{init}/cmdline").read_bytes().startswith(b"/sbin/docker-init"):
                return
            pidns = os.readlink(f"/proc/{init}/ns/pid")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # docker-init forks its child as it starts
                others = self._namespace(pidns) - {init}
                if others:
                    break
                time.sleep(0.002)
            if len(others) == 1 and _ppid(next(iter(others))) == init:
                self.init, self.keep, self.pidns = init, frozenset({init, *others}), pidns

    @staticmethod
    def _namespace(pidns: str) -> set[int]:
        """The host pids of the processes in pid namespace ``pidns``."""
        found = set()
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry.name}/ns/pid") == pidns:
                        found.add(int(entry.name))
        return found

    def _processes(self) -> set[int]:
        """The container's processes but its init and the idle program."""
        assert self.pidns is not None
        return self._namespace(self.pidns) - self.keep

    def _ipc_left(self) -> bool:
        """Whether the container's IPC namespace holds a SysV shared memory segment,
        semaphore set or message queue (a datum's, which would outlive it: one namespace
        per container). /proc/sysvipc shows the reader's namespace, so a thread of its own
        joins the container's (``setns``, which needs CAP_SYS_ADMIN) and ends with it; True
        (unknown) when it cannot."""
        left = [True]

        def look() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{self.init}/ns/ipc", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWIPC) != 0:
                    return
            finally:
                os.close(fd)
            left[0] = any(len(Path(f"/proc/sysvipc/{kind}").read_text().splitlines()) > 1
                          for kind in ("shm", "sem", "msg"))

        with contextlib.suppress(Exception):
            thread = threading.Thread(target=look, daemon=True)
            thread.start()
            thread.join()
        return left[0]

    def kill(self) -> None:
        """Kill every process a datum started in this container, its command's whole tree
        and whatever it left running, and return once none is left (a timeout, a stopped
        job, and the end of every datum). Where the engine's processes are not visible
        here, the container is killed and will not be used again."""
        if self.pidns is None:
            self.broken = True
            with contextlib.suppress(Exception):
                self.container.kill()
            return
        for _ in range(200):
            pids = self._processes()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        self.broken = True

    def _reset(self) -> None:
        """Empty the datum's writable places and reset their modes."""
        for d, mode in ((self.out, 0o755), (self.tmp, 0o1777), (self.shm, 0o1777)):
            empty_dir(d)
            d.chmod(mode)
        (self.run_dir / "stdin").unlink(missing_ok=True)

    def run(self, task: Task) -> int:
        """Run ``task`` (whose binds ``movable`` accepted) in this container. Whatever of
        its /pfs/out cannot be moved to ``task.out`` fails the datum (the log says what) and
        retires the container, as does SysV IPC the datum left (``_ipc_left``)."""
        moved: list[tuple[Path, Path]] = []
        made: list[Path] = []
        try:
            for host, inside in task.binds:
                rel = Path(inside).relative_to("/pfs")
                for parent in reversed(rel.parents[:-1]):
                    d = self.pfs / parent
                    if not d.is_dir():
                        d.mkdir()
                        d.chmod(0o755)
                        made.append(d)
                os.rename(host, self.pfs / rel)
                moved.append((host, self.pfs / rel))
            code = self._exec(task)
        except BaseException:
            self.broken = True
            raise
        finally:
            self.kill()
            for host, placed in reversed(moved):
                os.rename(placed, host)
            for d in reversed(made):
                d.rmdir()
            lost = self._collect(task)
            self._reset()
            if self.init is None or self._ipc_left():
                self.broken = True
        if lost:
            self.broken = True
            with open(task.log, "a") as log:
                log.write(f"\n[pfsmount] the datum's output could not be stored: "
                          f"/pfs/out/{lost}\n")
            return -1
        return code

    def _collect(self, task: Task) -> str:
        """Move what the datum wrote to /pfs/out to ``task.out``, entry by entry: the first
        entry that cannot be moved and why ("" when all moved)."""
        lost = ""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.out):
                try:
                    os.rename(entry.path, task.out / entry.name)
                except OSError as e:
                    lost = lost or f"{entry.name}: {e.strerror or e}"
            return lost
        return lost or "(unreadable)"

    def _exec(self, task: Task) -> int:
        cmd = list(task.cmd)
        if task.stdin:
            (self.run_dir / "stdin").write_text(task.stdin)
            (self.run_dir / "stdin").chmod(0o644)
            cmd = ["sh", "-c", 'exec "$@" < /.pfsmount/stdin', "sh", *cmd]
        exec_id = self.execs.create(self.container.id, cmd, {"HOME": "/tmp", **task.env},
                                    task.working_dir, self.user)
        ended, killed = threading.Event(), threading.Event()

        def watch() -> None:  # a timeout or a stopped job kills the datum's processes
            deadline = None if task.timeout is None else time.monotonic() + task.timeout
            while not ended.wait(0.05):
                if task.cancelled.is_set() or (deadline and time.monotonic() > deadline):
                    killed.set()
                    self.kill()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            with open(task.log, "ab") as log:  # as it comes: ``pfsmount logs`` reads it live
                for chunk in self.execs.start(exec_id):
                    log.write(chunk)
                    log.flush()
        finally:
            ended.set()
            watcher.join()
        if killed.is_set():
            return log_killed(task)
        code = self.execs.code(exec_id)
        return -9 if code is None else code


class DockerRunner:
    """Docker datums through the Docker SDK (and ``Execs``). A task of a pool (``Task.pool``,
    a job) runs in one of the pool's long-lived ``Worker`` containers, one datum at a time
    (so a job has as many as it runs datums at once); ``release`` removes a pool's
    containers when its job ends, ``close`` every one (the daemon stops) and ``sweep`` what
    an earlier daemon of the same root left. Any other task (``datum run``, inputs that
    cannot be renamed) gets a container of its own, hardened alike: no network, no
    capabilities, no new privileges, a read-only root, no socket or host path but the
    datum's own, and never root."""

    def __init__(self, work: Path | None = None, label: str = "") -> None:
        """``work``: where worker containers' directories go (the file system of the
        executor's scratch space); ``label``: the daemon's root, which names its
        containers."""
        self.work, self.label = work, label
        self.labels = {LABEL: label, SESSION: uuid.uuid4().hex} if label else {}
        self._client: object | None = None
        self._execs: Execs | None = None
        self._lock = threading.Lock()
        self._images: set[str] = set()  # images known to be present
        self._idle: dict[tuple[str, str], list[Worker]] = {}  # (pool, image) -> free
        self._busy: dict[str, set[Worker]] = {}  # pool -> running a datum
        self._count = itertools.count()
        self._removing: list[threading.Thread] = []

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
        """The container's uid (``_docker_user``); as root, /pfs/out is handed over."""
        if os.getuid() == 0:
            os.chown(task.out, NOBODY, NOBODY)
        return _docker_user()

    # -- long-lived containers ---------------------------------------------------------------

    def movable(self, task: Task) -> bool:
        """Whether ``task`` can run in a worker: its inputs can be renamed into one (files
        of the scratch space's file system, each in a place of its own under /pfs) and
        this daemon can check what a datum leaves (``SYS_ADMIN``, i.e. it runs as root).
        So a root daemon's datums run in workers (its inputs are copies: its mount does not
        let the container's uid in); a daemon of another user runs each Docker datum in a
        container of its own (~0.3 s more a datum; with a mount its inputs are the mount's
        own paths, bound, which no worker can take either)."""
        if not task.pool or self.work is None or IDLE is None or not SYS_ADMIN:
            return False
        insides = [PurePosixPath(inside) for _, inside in task.binds]
        pfs, out = PurePosixPath("/pfs"), PurePosixPath("/pfs/out")
        if any(pfs not in p.parents or p == out or out in p.parents
               or any(q != p and (q in p.parents) for q in insides) for p in insides):
            return False
        if len(set(insides)) != len(insides):
            return False
        with contextlib.suppress(OSError):
            dev = self.work.stat().st_dev
            return all(not h.is_symlink() and h.lstat().st_dev == dev
                       for h, _ in task.binds)
        return False

    def _lease(self, pool: str, image: str) -> Worker:
        client = self._docker()
        self._check_image(client, image)
        with self._lock:
            free = self._idle.get((pool, image))
            worker = free.pop() if free else None
            n = next(self._count)
        if worker is None:
            assert self.work is not None
            self.work.mkdir(parents=True, exist_ok=True)
            with self._lock:
                execs = self._execs = self._execs or Execs(client)
            worker = Worker(client, execs, image, self.work / ".containers" / f"{pool}-{n}",
                            self.labels)
        with self._lock:
            self._busy.setdefault(pool, set()).add(worker)
        return worker

    def _give_back(self, pool: str, worker: Worker) -> None:
        with self._lock:
            busy = self._busy.get(pool, set())
            kept = worker in busy and not worker.broken
            busy.discard(worker)
            if kept:
                self._idle.setdefault((pool, worker.image), []).append(worker)
        if not kept:
            self._remove([worker])

    def release(self, pool: str) -> None:
        """Remove the containers of ``pool`` (its job has ended)."""
        with self._lock:
            gone = [w for (p, _), ws in self._idle.items() if p == pool for w in ws]
            gone += self._busy.pop(pool, set())
            self._idle = {k: ws for k, ws in self._idle.items() if k[0] != pool}
        self._remove(gone)

    def _remove(self, workers: list[Worker]) -> None:
        """Remove ``workers``' containers and directories, off the caller's thread."""
        if not workers:
            return

        def remove() -> None:
            for worker in workers:
                worker.remove()

        thread = threading.Thread(target=remove, daemon=True)
        thread.start()
        with self._lock:
            self._removing = [t for t in self._removing if t.is_alive()] + [thread]

    def close(self, timeout: float = 30) -> None:
        """Remove every container this runner started and wait (``timeout`` at most)."""
        with self._lock:
            pools = {p for p, _ in self._idle} | set(self._busy)
        for pool in pools:
            self.release(pool)
        with self._lock:
            removing = list(self._removing)
        deadline = time.monotonic() + timeout
        for thread in removing:
            thread.join(max(0.0, deadline - time.monotonic()))

    def sweep(self) -> None:
        """Remove the containers an earlier daemon of this root left (it was killed), not
        those of this one, whose jobs may have started already."""
        if not self.label:
            return
        with contextlib.suppress(Exception):
            client = self._docker()
            for container in client.containers.list(
                    all=True, filters={"label": f"{LABEL}={self.label}"}):
                if container.labels.get(SESSION) != self.labels[SESSION]:
                    with contextlib.suppress(Exception):
                        container.remove(force=True)

    # -- a container per task ----------------------------------------------------------------

    def create(self, task: Task, interactive: bool = False, tty: bool = False) -> Any:
        """The container of ``task``, created, not started; ``interactive``: its stdin
        stays open for ``pfsmount datum shell`` (on a terminal with ``tty``)."""
        client = self._docker()
        self._check_image(client, task.image)
        volumes = {str(host): {"bind": inside, "mode": "ro"} for host, inside in task.binds}
        volumes[str(task.out)] = {"bind": "/pfs/out", "mode": "rw"}
        cmd = list(task.cmd)
        if task.stdin:
            volumes[str(stdin_file(task))] = {"bind": "/.pfsmount-stdin", "mode": "ro"}
            cmd = ["sh", "-c", 'exec "$@" < /.pfsmount-stdin', "sh", *cmd]
        return client.containers.create(
            task.image, cmd, volumes=volumes, environment={"HOME": "/tmp", **task.env},
            network_mode="none", user=self._user(task), cap_drop=["ALL"],
            security_opt=["no-new-privileges"], read_only=True,
            tmpfs={"/pfs": "ro", "/tmp": "exec"},  # as in the sandbox: /pfs/out and /tmp
            working_dir=task.working_dir or None, tty=tty, stdin_open=interactive,
            detach=not interactive,  # else stdin stays open after the client's ends
            labels=self.labels or None,
        )

    def run(self, task: Task) -> int:
        if self.movable(task):
            worker = self._lease(task.pool, task.image)
            try:
                return worker.run(task)
            finally:
                self._give_back(task.pool, worker)
        return self.run_once(task)

    def run_once(self, task: Task) -> int:
        """``task`` in a container of its own."""
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
            return log_killed(task) if killed.is_set() else code
        finally:
            exited.set()
            # Removing takes a while and nothing waits for it.
            threading.Thread(target=container.remove, kwargs={"force": True},
                             daemon=True).start()
