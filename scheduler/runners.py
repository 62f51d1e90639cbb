"""Runners: run one datum's command with its inputs read-only at ``/pfs/<input>/`` and an
empty writable ``/pfs/out``, in a bubblewrap sandbox over the host's programs or in a Docker
container. Both are blocking calls made from worker threads; both keep the datum's combined
stdout and stderr in its log file and return the exit code. Nothing here knows about jobs,
commits or the store.
"""

from __future__ import annotations

import contextlib
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
                with open(task.log, "a") as log:
                    log.write("\n[pfsmount] datum timed out\n" if timed_out
                              else "\n[pfsmount] job stopped\n")
                return -9


class SandboxRunner:
    """bubblewrap over the host's root, read-only, with no network."""

    def __init__(self) -> None:
        self.bwrap = shutil.which("bwrap")

    def run(self, task: Task) -> int:
        if self.bwrap is None:
            raise RunnerError("bubblewrap (bwrap) is not installed; install it or give the "
                              "pipeline an image to run in Docker")
        argv = [self.bwrap, "--die-with-parent", "--unshare-all", "--new-session",
                "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp", "--tmpfs", "/pfs", "--bind", str(task.out), "/pfs/out"]
        for host, inside in task.binds:
            argv += ["--ro-bind", str(host), inside]
        argv += ["--remount-ro", "/pfs"]  # nothing lands beside the inputs but in /pfs/out
        for key, value in task.env.items():
            argv += ["--setenv", key, value]
        argv += ["--chdir", task.working_dir or "/", "--", *task.cmd]
        with open(task.log, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log,
                                    stderr=subprocess.STDOUT)
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(task.stdin.encode())
            proc.stdin.close()
            return _wait(proc, task)


class DockerRunner:
    """A container per datum through the Docker SDK, with no network."""

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

    def run(self, task: Task) -> int:
        client = self._docker()
        self._check_image(client, task.image)
        volumes = {str(host): {"bind": inside, "mode": "ro"} for host, inside in task.binds}
        volumes[str(task.out)] = {"bind": "/pfs/out", "mode": "rw"}
        cmd = list(task.cmd)
        if task.stdin:
            stdin_file = task.out.parent / "stdin"
            stdin_file.write_text(task.stdin)
            volumes[str(stdin_file)] = {"bind": "/.pfsmount-stdin", "mode": "ro"}
            cmd = ["sh", "-c", 'exec "$@" < /.pfsmount-stdin', "sh", *cmd]
        container = client.containers.create(
            task.image, cmd, volumes=volumes, environment=task.env, network_mode="none",
            tmpfs={"/pfs": "ro"},  # as in the sandbox: only /pfs/out is writable under /pfs
            working_dir=task.working_dir or None, detach=True,
        )
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

        try:
            container.start()
            threading.Thread(target=watch, daemon=True).start()
            code = int(container.wait()["StatusCode"])
            exited.set()
            with open(task.log, "ab") as log:
                log.write(container.logs(stdout=True, stderr=True))
            return -9 if killed.is_set() else code
        finally:
            exited.set()
            # Removing takes a while and nothing waits for it.
            threading.Thread(target=container.remove, kwargs={"force": True},
                             daemon=True).start()
